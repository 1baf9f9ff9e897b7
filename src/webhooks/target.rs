//! Where a webhook may be sent (SPEC 12): `https` to public addresses, unless its host is
//! listed in `webhook_allow_hosts`. The URL is checked at config load; the addresses a
//! name resolves to are checked by the resolver the client connects through, so the
//! address checked is the address connected to (no second lookup to rebind).

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// The hosts allowed to be private or plain `http`, lower-cased, IPv6 without brackets.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Arc<Vec<String>>);

impl AllowedHosts {
    pub fn new(hosts: &[String]) -> Self {
        Self(Arc::new(hosts.iter().map(|host| normal(host)).collect()))
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = normal(host);
        self.0.contains(&host)
    }
}

fn normal(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// Checks a webhook URL: why it is refused, if it is.
pub fn check_url(url: &url::Url, allowed: &AllowedHosts) -> Result<(), String> {
    let host = url.host_str().ok_or("has no host")?;
    let listed = allowed.allows(host);
    match url.scheme() {
        "https" => {}
        "http" if listed => {}
        "http" => {
            return Err(format!(
                "is http to {host}, which webhook_allow_hosts does not list"
            ));
        }
        other => return Err(format!("has scheme {other}; https is required")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("carries credentials; put them in no URL".to_owned());
    }
    if let Some(ip) = literal_ip(url)
        && !listed
        && !is_public(ip)
    {
        return Err(format!(
            "is a {} address ({ip}) that webhook_allow_hosts does not list",
            range_of(ip)
        ));
    }
    Ok(())
}

fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Whether `ip` is a public unicast address (none of the special-purpose ranges).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => is_public_v4(mapped),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        // Carrier-grade NAT, 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, 192.0.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking, 198.18.0.0/15.
        || (a == 198 && (18..20).contains(&b))
        // The old 6to4 relay anycast, 192.88.99.0/24.
        || (a == 192 && b == 88 && c == 99))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local, fc00::/7.
        || (first & 0xfe00) == 0xfc00
        // Link-local, fe80::/10.
        || (first & 0xffc0) == 0xfe80
        // Documentation, 2001:db8::/32, and Teredo, 2001::/32 (it embeds IPv4).
        || (first == 0x2001 && matches!(ip.segments()[1], 0xdb8 | 0))
        // 6to4, 2002::/16 (it embeds IPv4), and the deprecated site-local fec0::/10.
        || first == 0x2002
        || (first & 0xffc0) == 0xfec0
        // IPv4-compatible and other reserved ::/8 (loopback and unspecified above).
        || (first & 0xff00) == 0)
}

fn range_of(ip: IpAddr) -> &'static str {
    match ip {
        ip if ip.is_loopback() => "loopback",
        IpAddr::V4(v4) if v4.is_private() => "private",
        IpAddr::V4(v4) if v4.is_link_local() => "link-local",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => "link-local",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => "private",
        _ => "non-public",
    }
}

/// Resolves a webhook's host and keeps only the addresses it may connect to: every one
/// for a listed host, public ones otherwise; none left is an error that says why.
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    pub allowed: AllowedHosts,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if allowed.allows(&host) {
                return Ok(Box::new(found.into_iter()) as Addrs);
            }
            let (public, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = found
                .into_iter()
                .partition(|address| is_public(address.ip()));
            if public.is_empty() {
                let shown = refused
                    .iter()
                    .map(|address| address.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(format!(
                    "{host} resolves only to addresses webhooks may not reach ({shown}); \
                     list the host in webhook_allow_hosts if it is meant"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(url: &str, allowed: &[&str]) -> Result<(), String> {
        let hosts: Vec<String> = allowed.iter().map(|host| (*host).to_owned()).collect();
        check_url(&url::Url::parse(url).unwrap(), &AllowedHosts::new(&hosts))
    }

    #[test]
    fn refuses_http_and_non_public_literals_unless_listed() {
        for url in [
            "http://169.254.169.254/",
            "https://10.0.0.1/",
            "https://[::1]/",
            "https://127.0.0.1:8443/hook",
            "https://[fd00::1]/",
            "https://100.64.0.1/",
            "https://[::ffff:192.168.1.1]/",
            "https://[2002:a00:1::1]/",
            "https://[2001:0:a00:1::1]/",
            "https://[fec0::1]/",
            "http://crm.example.com/hooks",
            "ftp://crm.example.com/",
            "https://user:pass@crm.example.com/",
        ] {
            assert!(checked(url, &[]).is_err(), "{url} was accepted");
        }
        assert!(checked("https://crm.example.com/hooks", &[]).is_ok());
        assert!(checked("https://8.8.8.8/hooks", &[]).is_ok());
        assert!(checked("http://127.0.0.1:9000/", &["127.0.0.1"]).is_ok());
        assert!(checked("https://[::1]/", &["[::1]"]).is_ok());
        assert!(checked("http://receiver.internal/", &["Receiver.Internal"]).is_ok());
    }

    #[test]
    fn says_which_range_a_refused_literal_is_in() {
        let error = checked("http://169.254.169.254/", &["crm.example.com"]).unwrap_err();
        assert!(error.contains("169.254.169.254"), "{error}");
        let error = checked("https://10.0.0.1/", &[]).unwrap_err();
        assert!(error.contains("private"), "{error}");
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_unless_listed() {
        let resolver = CheckedResolver {
            allowed: AllowedHosts::default(),
        };
        let name: Name = "localhost".parse().unwrap();
        let error = match resolver.resolve(name).await {
            Ok(_) => panic!("localhost resolved to a reachable address"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("localhost"), "{error}");
        let listed = CheckedResolver {
            allowed: AllowedHosts::new(&["localhost".to_owned()]),
        };
        let addresses: Vec<SocketAddr> = listed
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addresses.iter().all(|address| address.ip().is_loopback()));
    }
}
