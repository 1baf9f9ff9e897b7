//! `agentassist-hooks healthcheck`: one HTTP/1.1 GET over a plain TCP connection, so that
//! the container image needs no curl or wget for its HEALTHCHECK.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The URL the container's health check asks by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080/readyz";

/// GETs `url` (`http://host[:port][/path]`) and returns the status line when the answer is
/// 2xx; anything else, including no answer within `timeout`, is an error.
pub fn check(url: &str, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    let (authority, path) = split_url(url)?;
    let addresses: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .or_else(|_| (authority, 80).to_socket_addrs())
        .with_context(|| format!("cannot resolve {authority}"))?
        .collect();
    let mut stream =
        connect(&addresses, deadline).with_context(|| format!("cannot connect to {authority}"))?;
    stream.set_read_timeout(Some(remaining(deadline)?))?;
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: agentassist-hooks-healthcheck\r\nConnection: close\r\n\r\n"
    )
    .context("cannot send the request")?;
    let mut status_line = String::new();
    BufReader::new(stream.take(1024))
        .read_line(&mut status_line)
        .with_context(|| format!("no answer from {url}"))?;
    let status_line = status_line.trim_end().to_owned();
    let code = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("not an HTTP answer from {url}: {status_line:?}"))?;
    if !(200..300).contains(&code) {
        bail!("{url} answered {status_line}");
    }
    Ok(status_line)
}

fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs can be probed"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    anyhow::ensure!(!authority.is_empty(), "{url}: no host");
    Ok((authority, path))
}

fn connect(addresses: &[SocketAddr], deadline: Instant) -> anyhow::Result<TcpStream> {
    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect_timeout(address, remaining(deadline)?) {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    match last_error {
        Some(error) => Err(error.into()),
        None => bail!("no address"),
    }
}

fn remaining(deadline: Instant) -> anyhow::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    anyhow::ensure!(!left.is_zero(), "timed out");
    Ok(left)
}
