//! What the service's own HTTP clients (webhooks, the identity provider) share: TLS through
//! rustls on the crypto jsonwebtoken uses, with the public CA roots built in (the image has
//! no ca-certificates).

use anyhow::Context;
use std::sync::Arc;

pub fn tls() -> anyhow::Result<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS setup")?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
