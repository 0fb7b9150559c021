//! Key material the service makes for clients that authenticate with a key (Private Key JWT)
//! or a certificate (self-signed mTLS): RSA key pairs (aws-lc-rs), self-signed certificates
//! (rcgen), Auth0's `kid` for a key (RFC 7638's thumbprint) and a certificate's thumbprint, and
//! client assertions signed with a key (jsonwebtoken). The private key is a `SecretString`
//! (PKCS#8 PEM) from generation to the Vault write; `Debug` shows only the `kid`.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use aws_lc_rs::{
    encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der},
    rsa::{KeyPair as RsaKeyPair, KeySize},
    signature::KeyPair as _,
};
use base64::Engine;
use secrecy::{ExposeSecret, SecretString, zeroize::Zeroize};

/// The signing algorithms Auth0 accepts for a Private Key JWT credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// Auth0's default when a credential names none.
    #[default]
    Rs256,
    Rs384,
    Ps256,
}

impl KeyAlgorithm {
    pub const ALL: [KeyAlgorithm; 3] = [Self::Rs256, Self::Rs384, Self::Ps256];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Ps256 => "PS256",
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Rs384 => jsonwebtoken::Algorithm::RS384,
            Self::Ps256 => jsonwebtoken::Algorithm::PS256,
        }
    }
}

/// The size of the RSA keys the service makes (`ROTATOR_KEY_BITS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyBits {
    #[default]
    B2048,
    B3072,
    B4096,
}

impl KeyBits {
    pub fn parse(bits: u32) -> Option<Self> {
        match bits {
            2048 => Some(Self::B2048),
            3072 => Some(Self::B3072),
            4096 => Some(Self::B4096),
            _ => None,
        }
    }

    pub fn get(self) -> u32 {
        match self {
            Self::B2048 => 2048,
            Self::B3072 => 3072,
            Self::B4096 => 4096,
        }
    }

    fn size(self) -> KeySize {
        match self {
            Self::B2048 => KeySize::Rsa2048,
            Self::B3072 => KeySize::Rsa3072,
            Self::B4096 => KeySize::Rsa4096,
        }
    }
}

/// Why key material could not be made or used. Never carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the RSA key pair could not be generated")]
    Generate,
    #[error("the private key is not an RSA key in PKCS#8 PEM")]
    Malformed,
    #[error("the self-signed certificate could not be made")]
    Certificate,
    #[error("the client assertion could not be signed")]
    Sign,
}

/// An RSA key pair: the private key as PKCS#8 PEM, the public key as SPKI PEM, and the `kid`
/// Auth0 gives a credential registered with it.
pub struct KeyPair {
    private_pem: SecretString,
    public_pem: String,
    kid: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A self-signed certificate for mTLS: what Auth0 registers, and what it derives from it.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub pem: String,
    /// base64url SHA-256 of the DER: Auth0's `thumbprint_sha256`.
    pub thumbprint_sha256: String,
    pub not_after: SystemTime,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn pem(label: &str, der: &[u8]) -> String {
    let mut b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    b64.zeroize();
    text
}

/// RFC 7638's JWK thumbprint of an RSA public key: base64url SHA-256 of
/// `{"e":...,"kty":"RSA","n":...}`, what Auth0 answers as a credential's `kid`.
pub fn rsa_thumbprint(modulus: &[u8], exponent: &[u8]) -> String {
    let jwk = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        b64url(exponent),
        b64url(modulus)
    );
    b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, jwk.as_bytes()).as_ref())
}

/// The `kid` Auth0 gives a credential registered with `public_pem` (SPKI `PUBLIC KEY`);
/// `None` when it is not an RSA public key.
pub fn public_pem_kid(public_pem: &str) -> Option<String> {
    use x509_parser::{prelude::FromDer, public_key::PublicKey, x509::SubjectPublicKeyInfo};
    let (_, pem) = x509_parser::pem::parse_x509_pem(public_pem.trim().as_bytes()).ok()?;
    let (_, spki) = SubjectPublicKeyInfo::from_der(&pem.contents).ok()?;
    let strip = |b: &[u8]| b[b.iter().position(|x| *x != 0).unwrap_or(b.len())..].to_vec();
    match spki.parsed().ok()? {
        PublicKey::RSA(key) => Some(rsa_thumbprint(&strip(key.modulus), &strip(key.exponent))),
        _ => None,
    }
}

impl KeyPair {
    /// Generates a key pair. CPU-bound (tens to hundreds of milliseconds for 2048 bits, more
    /// for larger keys): run it off the async workers (`spawn_blocking`).
    pub fn generate(bits: KeyBits) -> Result<Self, KeyError> {
        let key = RsaKeyPair::generate(bits.size()).map_err(|_| KeyError::Generate)?;
        Self::from_rsa(&key)
    }

    /// The key pair a PKCS#8 PEM private key (as Vault holds it) belongs to.
    pub fn from_private_pem(private_pem: &SecretString) -> Result<Self, KeyError> {
        let (_, parsed) =
            x509_parser::pem::parse_x509_pem(private_pem.expose_secret().trim().as_bytes())
                .map_err(|_| KeyError::Malformed)?;
        let mut der = parsed.contents;
        let key = match parsed.label.as_str() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der).map_err(|_| KeyError::Malformed),
            _ => Err(KeyError::Malformed),
        };
        der.zeroize();
        Self::from_rsa(&key?)
    }

    fn from_rsa(key: &RsaKeyPair) -> Result<Self, KeyError> {
        let pkcs8: Pkcs8V1Der<'_> = key.as_der().map_err(|_| KeyError::Generate)?;
        let private_pem = SecretString::from(pem("PRIVATE KEY", pkcs8.as_ref()));
        let public = key.public_key();
        let spki: PublicKeyX509Der<'_> = public.as_der().map_err(|_| KeyError::Generate)?;
        let kid = rsa_thumbprint(
            public.modulus().big_endian_without_leading_zero(),
            public.exponent().big_endian_without_leading_zero(),
        );
        Ok(Self {
            private_pem,
            public_pem: pem("PUBLIC KEY", spki.as_ref()),
            kid,
        })
    }

    pub fn private_pem(&self) -> &SecretString {
        &self.private_pem
    }

    /// The public key, SPKI PEM: what Auth0 registers.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// The `kid` Auth0 gives a credential registered with this key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A self-signed certificate of this key for `subject` (a client id), valid from now for
    /// `lifetime`.
    pub fn certificate(&self, subject: &str, lifetime: Duration) -> Result<Certificate, KeyError> {
        let signer = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(
            self.private_pem.expose_secret(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(|_| KeyError::Certificate)?;
        let now = SystemTime::now();
        let not_after = now + lifetime;
        let at = |t: SystemTime| {
            let secs = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .map_err(|_| KeyError::Certificate)
        };
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|_| KeyError::Certificate)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, subject);
        params.not_before = at(now - Duration::from_secs(60))?;
        params.not_after = at(not_after)?;
        let cert = params
            .self_signed(&signer)
            .map_err(|_| KeyError::Certificate)?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.der());
        Ok(Certificate {
            pem: cert.pem(),
            thumbprint_sha256: b64url(digest.as_ref()),
            not_after: SystemTime::UNIX_EPOCH
                + Duration::from_secs(at(not_after)?.unix_timestamp().max(0) as u64),
        })
    }

    /// A client assertion for `client_id` at the tenant `domain`: `iss` = `sub` = the client,
    /// `aud` = `https://{domain}/`, 60 seconds of lifetime and a fresh `jti`, signed with `alg`
    /// (the credential's), naming `kid` when given.
    pub fn assertion(
        &self,
        client_id: &str,
        domain: &str,
        alg: KeyAlgorithm,
        kid: Option<&str>,
    ) -> Result<SecretString, KeyError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": format!("https://{domain}/"),
            "iat": now,
            "exp": now + 60,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let mut header = jsonwebtoken::Header::new(alg.jwt());
        header.kid = kid.map(str::to_owned);
        let key =
            jsonwebtoken::EncodingKey::from_rsa_pem(self.private_pem.expose_secret().as_bytes())
                .map_err(|_| KeyError::Sign)?;
        jsonwebtoken::encode(&header, &claims, &key)
            .map(SecretString::from)
            .map_err(|_| KeyError::Sign)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;

    /// The emulator's seed key, whose thumbprint was computed apart from this code (Python's
    /// `cryptography`): the `kid` Auth0 would answer for it.
    const SEED_KEY: &str = include_str!("../emulator/credentials/seed-key.pem");
    const SEED_KID: &str = "5DTzBOYP0-fVQmOISufgMfMa8CNPR6nafqclDHO8XzQ";

    #[test]
    fn a_key_read_back_from_its_pem_has_auth0s_kid() {
        let key = KeyPair::from_private_pem(&SecretString::from(SEED_KEY)).unwrap();
        assert_eq!(key.kid(), SEED_KID);
        assert!(key.public_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
        // The PEM it writes reads back to the same key.
        let again = KeyPair::from_private_pem(key.private_pem()).unwrap();
        assert_eq!(again.kid(), SEED_KID);
        assert_eq!(public_pem_kid(key.public_pem()).as_deref(), Some(SEED_KID));
        assert_eq!(public_pem_kid("not a key"), None);
    }

    #[test]
    fn a_generated_key_signs_assertions_auth0_verifies() {
        let key = KeyPair::generate(KeyBits::B2048).unwrap();
        for alg in KeyAlgorithm::ALL {
            let first = key
                .assertion("AbCd0123", "tenant.example.com", alg, Some(key.kid()))
                .unwrap();
            let second = key
                .assertion("AbCd0123", "tenant.example.com", alg, None)
                .unwrap();
            let mut validation = Validation::new(alg.jwt());
            validation.set_audience(&["https://tenant.example.com/"]);
            validation.set_issuer(&["AbCd0123"]);
            validation.sub = Some("AbCd0123".into());
            let public = DecodingKey::from_rsa_pem(key.public_pem().as_bytes()).unwrap();
            let decode = |jwt: &SecretString| {
                jsonwebtoken::decode::<serde_json::Value>(jwt.expose_secret(), &public, &validation)
                    .unwrap()
            };
            let (a, b) = (decode(&first), decode(&second));
            assert_eq!(a.header.kid.as_deref(), Some(key.kid()));
            assert_eq!(
                a.claims["exp"].as_u64().unwrap() - a.claims["iat"].as_u64().unwrap(),
                60
            );
            assert_ne!(a.claims["jti"], b.claims["jti"], "a fresh jti each time");
        }
    }

    #[test]
    fn a_certificate_is_self_signed_for_the_key_and_lives_as_long_as_asked() {
        let key = KeyPair::from_private_pem(&SecretString::from(SEED_KEY)).unwrap();
        let lifetime = Duration::from_secs(90 * 86_400);
        let cert = key.certificate("AbCd0123", lifetime).unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(cert.pem.as_bytes()).unwrap();
        let (_, parsed) = X509Certificate::from_der(&der.contents).unwrap();
        assert_eq!(parsed.subject(), parsed.issuer(), "self-signed");
        assert!(parsed.subject().to_string().contains("AbCd0123"));
        let not_after = parsed.validity().not_after.timestamp() as u64;
        let expected = SystemTime::now() + lifetime;
        let expected = expected
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            expected.abs_diff(not_after) < 5,
            "{not_after} vs {expected}"
        );
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der.contents);
        assert_eq!(cert.thumbprint_sha256, b64url(digest.as_ref()));
        // The certificate carries this key.
        let (_, spki) = x509_parser::pem::parse_x509_pem(key.public_pem().as_bytes()).unwrap();
        assert_eq!(parsed.public_key().raw, &spki.contents[..]);
    }

    #[test]
    fn neither_debug_nor_errors_show_key_material() {
        let key = KeyPair::from_private_pem(&SecretString::from(SEED_KEY)).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(SEED_KID));
        let body: String = SEED_KEY.lines().nth(1).unwrap().to_owned();
        assert!(!shown.contains(&body), "{shown}");
        let err = KeyPair::from_private_pem(&SecretString::from(format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n"
        )))
        .unwrap_err();
        assert_eq!(err, KeyError::Malformed);
        assert!(!err.to_string().contains(&body));
    }

    #[test]
    fn algorithms_and_sizes_parse_from_their_names() {
        assert_eq!(KeyAlgorithm::parse("PS256"), Some(KeyAlgorithm::Ps256));
        assert_eq!(KeyAlgorithm::parse("HS256"), None);
        assert_eq!(KeyBits::parse(3072).map(KeyBits::get), Some(3072));
        assert_eq!(KeyBits::parse(1024), None);
    }
}
