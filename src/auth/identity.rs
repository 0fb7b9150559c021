//! Typed caller identities. Where an identity came from is part of it, so that no source can
//! pose as another: a certificate's URI SAN is a SPIFFE ID as-is (`spiffe://...`), its DNS SAN
//! is `dns:<name>`, a bearer token's subject is `jwt:<sub>`. A token whose `sub` reads like a
//! SPIFFE ID is `jwt:spiffe://...`, which no certificate identity can equal, and the policy
//! names identities in the same typed form.

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub const SPIFFE: &str = "spiffe://";
pub const DNS: &str = "dns:";
pub const JWT: &str = "jwt:";

/// The longest SPIFFE ID the specification allows, in bytes.
const SPIFFE_ID_MAX: usize = 2048;

/// Why a client certificate names no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateIdentityError {
    #[error("the client certificate names no identity (no URI or DNS SAN)")]
    None,
    #[error(
        "the client certificate has {0} URI SANs; an X.509-SVID has exactly one, its SPIFFE ID"
    )]
    SeveralUris(usize),
    #[error("the client certificate's URI SAN is not a SPIFFE ID (spiffe://<trust domain>/<path>)")]
    NotSpiffe,
}

/// The typed identity of a client certificate (DER): its one URI SAN, which must be a SPIFFE
/// ID, else `dns:` and its first DNS SAN.
pub fn certificate_identity(der: &[u8]) -> Result<String, CertificateIdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| CertificateIdentityError::None)?;
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .ok_or(CertificateIdentityError::None)?;
    let names = &san.value.general_names;
    let uris: Vec<&str> = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [uri] if is_spiffe_id(uri) => return Ok((*uri).to_owned()),
        [_] => return Err(CertificateIdentityError::NotSpiffe),
        [] => {}
        several => return Err(CertificateIdentityError::SeveralUris(several.len())),
    }
    names
        .iter()
        .find_map(|n| match n {
            GeneralName::DNSName(dns) if !dns.is_empty() => Some(format!("{DNS}{dns}")),
            _ => None,
        })
        .ok_or(CertificateIdentityError::None)
}

/// The typed identity of a bearer token's subject.
pub fn token_identity(sub: &str) -> String {
    format!("{JWT}{sub}")
}

/// Whether a caller pattern of the policy says which kind of identity it matches.
pub fn is_typed(pattern: &str) -> bool {
    [SPIFFE, DNS, JWT]
        .iter()
        .any(|kind| pattern.len() > kind.len() && pattern.starts_with(kind))
}

/// `spiffe://<trust domain>/<path>` as the SPIFFE ID specification defines it: a lowercase
/// trust domain of `[a-z0-9.-_]`, a non-empty path of segments of `[A-Za-z0-9.-_]` that are
/// neither empty nor `.` or `..`; no port, user info, query or fragment.
pub fn is_spiffe_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix(SPIFFE) else {
        return false;
    };
    let Some((domain, path)) = rest.split_once('/') else {
        return false;
    };
    let domain_ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b));
    let path_ok = path.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b))
    });
    id.len() <= SPIFFE_ID_MAX && domain_ok && path_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_follow_the_specification() {
        for good in [
            "spiffe://corp.example/ns/platform/sa/rotation-bot",
            "spiffe://td/a",
            "spiffe://my-td_1.example/a.b/c_d-e",
        ] {
            assert!(is_spiffe_id(good), "{good}");
        }
        for bad in [
            "spiffe://corp.example",
            "spiffe://corp.example/",
            "spiffe://Corp.example/a",
            "spiffe://corp.example:443/a",
            "spiffe://user@corp.example/a",
            "spiffe://corp.example/a//b",
            "spiffe://corp.example/a/../b",
            "spiffe://corp.example/./a",
            "spiffe://corp.example/a/",
            "spiffe://corp.example/a?b=c",
            "spiffe://corp.example/a#b",
            "spiffe:///a",
            "https://corp.example/a",
            "jwt:spiffe://corp.example/a",
        ] {
            assert!(!is_spiffe_id(bad), "{bad}");
        }
    }

    #[test]
    fn policy_patterns_must_be_typed() {
        assert!(is_typed("spiffe://corp.example/ns/*/sa/*"));
        assert!(is_typed("dns:*.corp.example"));
        assert!(is_typed("jwt:release-*@corp.example"));
        for untyped in ["*", "release@corp.example", "jwt:", "dns:", "spiffe://"] {
            assert!(!is_typed(untyped), "{untyped}");
        }
        assert_eq!(token_identity("spiffe://x/y"), "jwt:spiffe://x/y");
    }
}
