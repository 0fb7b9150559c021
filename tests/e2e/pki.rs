//! Test certificates and tokens, generated per run (rcgen, jsonwebtoken): no committed keys.

use std::path::PathBuf;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType, date_time_ymd,
};
use serde_json::json;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

pub const BOT: &str = "spiffe://corp.example/ns/platform/sa/rotation-bot";
pub const ISSUER: &str = "https://issuer.corp.example/";
pub const AUDIENCE: &str = "secret-rotator";

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate and its key (PEM), with the given SANs and validity.
    pub fn leaf(&self, sans: Vec<SanType>, expired: bool) -> (String, String) {
        self.leaf_with(sans, expired, |_| {})
    }

    /// [`Self::leaf`], with its parameters changed by `tweak` (key usages, CA flag).
    pub fn leaf_with(
        &self,
        sans: Vec<SanType>,
        expired: bool,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "leaf");
        params.subject_alt_names = sans;
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn server(&self) -> (String, String) {
        self.leaf(
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            false,
        )
    }

    pub fn client(&self, spiffe_id: &str, expired: bool) -> (String, String) {
        self.leaf(vec![SanType::URI(spiffe_id.try_into().unwrap())], expired)
    }
}

/// Files the service reads: its certificate, key, client CA, JWKS and policy.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub signer: JwtSigner,
}

impl Pki {
    pub fn new(policy: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test CA");
        let (cert, key) = ca.server();
        let signer = JwtSigner::new("test-key");
        let pki = Self { dir, ca, signer };
        pki.write("server.pem", &cert);
        pki.write("server.key", &key);
        pki.write("ca.pem", &pki.ca.pem());
        pki.write("jwks.json", &pki.signer.jwks());
        pki.write("policy.toml", policy);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: &str) {
        // Write then rename, as a deployment would: readers never see half a file.
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(tmp, self.path(name)).unwrap();
    }

    /// `serve` flags for TLS, mutual TLS, bearer tokens and the policy.
    pub fn args(&self) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        [
            ("--insecure", "false".to_owned()),
            ("--tls-cert", p("server.pem")),
            ("--tls-key", p("server.key")),
            ("--tls-client-ca", p("ca.pem")),
            ("--jwks-file", p("jwks.json")),
            ("--jwt-issuer", ISSUER.to_owned()),
            ("--jwt-audience", AUDIENCE.to_owned()),
            ("--policy-file", p("policy.toml")),
            ("--reload-interval", "100ms".to_owned()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect()
    }

    /// The same as environment variables, for the binary.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            ("ROTATOR_INSECURE", "false".to_owned()),
            ("ROTATOR_TLS_CERT", p("server.pem")),
            ("ROTATOR_TLS_KEY", p("server.key")),
            ("ROTATOR_TLS_CLIENT_CA", p("ca.pem")),
            ("ROTATOR_JWKS_FILE", p("jwks.json")),
            ("ROTATOR_JWT_ISSUER", ISSUER.to_owned()),
            ("ROTATOR_JWT_AUDIENCE", AUDIENCE.to_owned()),
            ("ROTATOR_POLICY_FILE", p("policy.toml")),
            ("ROTATOR_RELOAD_INTERVAL", "100ms".to_owned()),
        ]
    }

    /// TLS that trusts the test CA, without a client certificate.
    pub fn tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.pem()))
            .domain_name("localhost")
    }

    /// TLS with a client certificate.
    pub fn mtls(&self, cert: &(String, String)) -> ClientTlsConfig {
        self.tls().identity(Identity::from_pem(&cert.0, &cert.1))
    }
}

/// Signs bearer tokens (ES256) and publishes the matching JWKS.
pub struct JwtSigner {
    kid: String,
    key: KeyPair,
}

impl JwtSigner {
    pub fn new(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            key: KeyPair::generate().unwrap(),
        }
    }

    pub fn jwks(&self) -> String {
        // The raw public key is the uncompressed point 0x04 || X || Y.
        let raw = self.key.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }]})
        .to_string()
    }

    /// A token for `sub`, with `aud` and an expiry `exp_in` seconds from now (negative: past).
    pub fn token(&self, sub: &str, aud: &str, exp_in: i64) -> String {
        self.token_with(sub, aud, exp_in, None, None)
    }

    /// [`Self::token`], valid only from `nbf_in` seconds from now, with a `crit` header.
    pub fn token_with(
        &self,
        sub: &str,
        aud: &str,
        exp_in: i64,
        nbf_in: Option<i64>,
        crit: Option<Vec<String>>,
    ) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut claims =
            json!({"sub": sub, "iss": ISSUER, "aud": aud, "iat": now, "exp": now + exp_in});
        if let Some(nbf_in) = nbf_in {
            claims["nbf"] = json!(now + nbf_in);
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.crit = crit;
        let key =
            jsonwebtoken::EncodingKey::from_ec_pem(self.key.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    /// A token that claims `alg: none` and carries no signature.
    pub fn unsigned_token(&self, sub: &str) -> String {
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT", "kid": self.kid})),
            b64(json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": exp}))
        )
    }

    /// HS256 "signed" with the public key as the HMAC secret (the key-confusion attack).
    pub fn hmac_with_public_key(&self, sub: &str) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let claims = json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": exp});
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        let secret = self.key.public_key_pem();
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }
}
