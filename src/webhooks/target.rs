//! Where a webhook may be sent, so that the service cannot be turned against the internal
//! network: `https` only (plain `http` to the hosts of `ERASURE_WEBHOOK_ALLOW_HTTP_HOSTS`), no
//! credentials in the URL, and
//! - with `ERASURE_WEBHOOK_ALLOWED_HOSTS` set: only the hosts it lists (`*.example.com` for the
//!   subdomains of `example.com`), trusted wherever they resolve;
//! - without it: any host but loopback, private, link-local and other internal addresses, by
//!   name (`localhost`) or address, and at delivery a name must resolve to public addresses only
//!   (`Resolver`: the addresses are checked where the connection is made, so a name cannot
//!   resolve one way when checked and another when used).
//!
//! Hosts listed in either variable are trusted: the operator named them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;

use crate::config::WebhookSettings;

/// Why a delivery to a host that resolves to internal addresses only was not sent.
pub const INTERNAL_ONLY: &str = "the host resolves to internal addresses only";

/// The longest URL accepted.
pub const MAX_URL: usize = 2000;

/// Whether `host` (lower-case, no brackets) matches an entry of a host list.
fn listed(list: &[String], host: &str) -> bool {
    list.iter().any(|entry| match entry.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => entry.trim_start_matches('[').trim_end_matches(']') == host,
    })
}

/// Whether a host is trusted wherever it resolves (named by the operator).
fn trusted(settings: &WebhookSettings, host: &str) -> bool {
    listed(&settings.allow_http_hosts, host)
        || settings
            .allowed_hosts
            .as_deref()
            .is_some_and(|l| listed(l, host))
}

/// Whether an address is internal (not routable on the public internet).
pub fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
                || v6.segments()[..2] == [0x2001, 0xdb8] // documentation
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible
                || v6.segments()[..2] == [0x64, 0xff9b] // NAT64
        }
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// The host of a URL, lower-case, without the brackets of an IPv6 address.
fn host_of(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase(),
    )
}

/// Checks a subscription's URL (when it is made or changed, and before every delivery); the
/// reason, for people, when it is refused. It never echoes the URL.
pub fn check(settings: &WebhookSettings, text: &str) -> Result<Url, String> {
    if text.len() > MAX_URL {
        return Err(format!("must be at most {MAX_URL} characters"));
    }
    let url = Url::parse(text).map_err(|_| "must be an absolute http(s) URL".to_string())?;
    let host = host_of(&url).ok_or("must name a host")?;
    if host.is_empty() {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (user:password@)".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment (#...)".into());
    }
    match url.scheme() {
        "https" => {}
        "http" if listed(&settings.allow_http_hosts, &host) => {}
        "http" => {
            return Err(
                "must use https (plain http only to the hosts of ERASURE_WEBHOOK_ALLOW_HTTP_HOSTS)"
                    .into(),
            );
        }
        _ => return Err("must be an https URL".into()),
    }
    if trusted(settings, &host) {
        return Ok(url);
    }
    if settings.allowed_hosts.is_some() {
        return Err("this host is not in ERASURE_WEBHOOK_ALLOWED_HOSTS".into());
    }
    let internal_name = host == "localhost"
        || host.ends_with(".localhost")
        || host.ends_with(".local")
        || host.ends_with(".internal")
        || !host.contains('.') && host.parse::<IpAddr>().is_err();
    let internal_ip = host.parse::<IpAddr>().is_ok_and(internal);
    if internal_name || internal_ip {
        return Err(
            "must be a public host: internal names and addresses are refused (list the host in \
             ERASURE_WEBHOOK_ALLOWED_HOSTS to allow it)"
                .into(),
        );
    }
    Ok(url)
}

/// Resolves names for deliveries, keeping only public addresses for hosts that are not trusted.
#[derive(Clone)]
pub struct Resolver {
    pub settings: Arc<WebhookSettings>,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let trusted = trusted(&self.settings, &host);
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| trusted || !internal(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(INTERNAL_ONLY.into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(allowed: Option<&[&str]>, http: &[&str]) -> WebhookSettings {
        WebhookSettings {
            allowed_hosts: allowed.map(|l| l.iter().map(|s| s.to_string()).collect()),
            allow_http_hosts: http.iter().map(|s| s.to_string()).collect(),
            ..WebhookSettings::default()
        }
    }

    #[test]
    fn without_an_allow_list_only_public_https_hosts() {
        let s = settings(None, &["127.0.0.1"]);
        assert!(check(&s, "https://hooks.example.com/x?y=1").is_ok());
        assert!(check(&s, "http://127.0.0.1:9000/hook").is_ok());
        for bad in [
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "https://localhost/",
            "https://10.1.2.3/",
            "https://192.168.0.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://127.0.0.2/",
            "https://0.0.0.0/",
            "https://metadata/",
            "https://user:pw@hooks.example.com/",
            "https://hooks.example.com/#frag",
            "not a url",
            "/relative",
        ] {
            assert!(check(&s, bad).is_err(), "{bad}");
        }
    }

    /// A name that resolves to internal addresses is not connected to, unless it is trusted.
    #[tokio::test]
    async fn names_resolving_inside_are_refused_at_delivery() {
        use reqwest::dns::Resolve;
        let name = |n: &str| n.parse::<reqwest::dns::Name>().unwrap();
        let refusing = Resolver {
            settings: Arc::new(settings(None, &[])),
        };
        let e = refusing.resolve(name("localhost")).await.err().unwrap();
        assert_eq!(e.to_string(), INTERNAL_ONLY);
        let trusting = Resolver {
            settings: Arc::new(settings(None, &["localhost"])),
        };
        assert!(trusting.resolve(name("localhost")).await.is_ok());
    }

    #[test]
    fn with_an_allow_list_only_its_hosts() {
        let s = settings(Some(&["hooks.example.com", "*.corp.example"]), &[]);
        assert!(check(&s, "https://hooks.example.com/a").is_ok());
        assert!(check(&s, "https://HOOKS.example.com./a").is_ok());
        assert!(check(&s, "https://siem.corp.example/a").is_ok());
        assert!(check(&s, "https://corp.example/a").is_err());
        assert!(check(&s, "https://evil.example.org/a").is_err());
        assert!(check(&s, "https://evilcorp.example/a").is_err());
        assert!(check(&s, "http://hooks.example.com/a").is_err());
    }
}
