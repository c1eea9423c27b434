//! A cluster CA and the certificates it issues to edges, preheaters and agents, for
//! deployments without a certificate manager (`edge-cache certs init|issue`).
//!
//! Keys are ECDSA P-256. Issued certificates serve TLS and authenticate as clients alike (an
//! edge serves agents and calls other edges); their subject CN is the identity an edge knows
//! the holder by, unless a `spiffe://` URI is given.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// File names inside a CA directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

/// What to put in an issued certificate.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// The identity (subject CN): an agent's host id, an edge's name.
    pub name: String,
    pub dns: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    /// A `spiffe://` URI SAN; when present, it is the identity instead of the CN.
    pub spiffe: Option<String>,
    /// Days of validity from now.
    pub days: u32,
}

/// Valid from a day ago (clocks differ) for `days` days.
fn validity(params: &mut CertificateParams, days: u32) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - DAY;
    params.not_after = now + DAY * days;
}

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    options.mode(if private { 0o600 } else { 0o644 });
    let mut file = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Creates `dir/ca.crt` and `dir/ca.key` (mode 0600); refuses to overwrite an existing CA.
pub fn init_ca(dir: &Path, common_name: &str, days: u32) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if cert_path.exists() || key_path.exists() {
        return Err(format!(
            "{} already holds a CA; not overwriting it",
            dir.display()
        ));
    }
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = ca_params(common_name);
    validity(&mut params, days);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    Ok(cert_path)
}

/// Issues a certificate signed by the CA in `ca_dir`, as `out/<name>.crt` and `out/<name>.key`
/// (mode 0600). Returns the two paths.
pub fn issue(ca_dir: &Path, subject: &Subject, out: &Path) -> Result<(PathBuf, PathBuf), String> {
    if subject.name.is_empty() || subject.name.contains(['/', '\0']) {
        return Err(format!("{:?} is not a usable certificate name", subject.name));
    }
    let ca_pem = std::fs::read_to_string(ca_dir.join(CA_CERT))
        .map_err(|e| format!("{}: {e}", ca_dir.join(CA_CERT).display()))?;
    let ca_key_path = ca_dir.join(CA_KEY);
    crate::tls::check_private(&ca_key_path)?;
    let ca_key_pem =
        std::fs::read_to_string(&ca_key_path).map_err(|e| format!("{}: {e}", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| format!("{}: {e}", ca_key_path.display()))?;
    // The issuer of the new certificate is the CA's subject: rebuilt from its CN, as `init_ca`
    // made it (same encoding, same key, so the chain verifies).
    let ca_cn = ca_common_name(&ca_pem)?;
    let ca = ca_params(&ca_cn)
        .self_signed(&ca_key)
        .map_err(|e| e.to_string())?;

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, subject.name.as_str());
    let mut sans = Vec::new();
    for dns in &subject.dns {
        sans.push(SanType::DnsName(
            dns.clone().try_into().map_err(|e| format!("{dns}: {e}"))?,
        ));
    }
    sans.extend(subject.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    if let Some(uri) = &subject.spiffe {
        if !uri.starts_with("spiffe://") {
            return Err(format!("{uri:?} is not a spiffe:// URI"));
        }
        sans.push(SanType::URI(
            uri.clone().try_into().map_err(|e| format!("{uri}: {e}"))?,
        ));
    }
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, subject.days.max(1));
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (cert_path, key_path) = (
        out.join(format!("{}.crt", subject.name)),
        out.join(format!("{}.key", subject.name)),
    );
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

fn ca_common_name(pem: &str) -> Result<String, String> {
    let der = crate::tls::parse_pem_certs(pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or("the CA file holds no certificate")?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| format!("CA certificate: {e}"))?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("the CA certificate has no CN")?;
    Ok(cn.to_string())
}
