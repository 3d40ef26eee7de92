//! The certificate the HTTPS listener presents.
//!
//! Browsers give a page the microphone only in a secure context, so every
//! phone in the house needs https. With no `--tls-cert`, the first start
//! makes a local certificate authority (CA) and a server certificate signed
//! by it, both kept in `--state-dir`; a person trusts the CA once per device
//! (the plain-http page offers it for download) and from then on every
//! server certificate this daemon makes is trusted too.
//!
//! Files in the state directory (keys written with mode 0600, the directory
//! made with 0700):
//! - `ca.key`, `ca.crt`: the CA, PEM. Made once and kept: replacing it would
//!   make every device trust it again. Its name carries a hash of its key, so
//!   it can sign again after a restart without parsing its own certificate.
//! - `server.key`, `server.crt`: the server key and its chain (server
//!   certificate, then the CA), PEM.
//! - `server.json`: the names the server certificate holds and when it
//!   expires, to decide on renewal without an X.509 parser. Missing or
//!   unreadable means "renew".
//!
//! Invariants:
//! - The server certificate names the host name, `<host name>.local`,
//!   `localhost` and every address of every interface, has extended key
//!   usage serverAuth only, and is valid for at most `SERVER_CERT_DAYS`
//!   (Apple's limit for TLS server certificates, 825 days).
//! - It is renewed, by the same CA, when it has less than `RENEW_BEFORE`
//!   left or when the machine's names or addresses change; the running
//!   daemon checks every `CHECK_INTERVAL` and swaps certificates without
//!   dropping a connection.
//! - Nothing here runs per connection: the handshake uses the prepared
//!   `rustls::ServerConfig`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::CertificateSource;

/// Longest validity of a server certificate: Apple platforms refuse TLS
/// server certificates valid for longer than 825 days.
pub const SERVER_CERT_DAYS: i64 = 825;
/// Validity of the local CA: long, since replacing it means trusting it
/// again on every device.
pub const CA_DAYS: i64 = 20 * 365;
/// A server certificate with less than this left is renewed.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the running daemon looks at its names, addresses and the
/// certificate's expiry.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// Certificates start this long before they are made, so a device whose
/// clock runs a little behind still accepts them.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// Why there is no certificate to serve. The text names the file and what
/// is wrong with it; `main` prints it and exits.
#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail(path: &Path, what: impl std::fmt::Display) -> TlsError {
    TlsError(format!("{}: {what}", path.display()))
}

/// The certificate being served, and how it came to be.
pub struct Certificates {
    /// What the HTTPS listener hands to each handshake.
    pub server_config: Arc<ServerConfig>,
    /// The CA's certificate (DER) for `/api/https` and the download, when
    /// the daemon made its own; `None` with `--tls-cert`.
    pub ca_der: Option<Vec<u8>>,
    /// What renewal needs; `None` with `--tls-cert`.
    generated: Option<Generated>,
    /// One line for the log: where the certificate comes from.
    pub summary: String,
}

/// The state of a generated certificate.
struct Generated {
    dir: PathBuf,
    ca: LocalCa,
    server: ServerState,
}

/// What `server.json` holds.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct ServerState {
    /// Every name in the certificate, sorted.
    names: Vec<String>,
    /// Unix seconds.
    not_after: i64,
}

impl Certificates {
    /// Load or make the certificate for `source`. Errors name the file.
    pub fn load(source: &CertificateSource) -> Result<Certificates, TlsError> {
        match source {
            CertificateSource::Files { cert, key } => {
                let chain = read_chain(cert)?;
                let key_der = read_key(key)?;
                let server_config = server_config(chain, key_der).map_err(|error| {
                    fail(key, format!("does not fit the certificate in {}: {error}", cert.display()))
                })?;
                Ok(Certificates {
                    server_config,
                    ca_der: None,
                    generated: None,
                    summary: format!("certificate from {}", cert.display()),
                })
            }
            CertificateSource::Generated { state_dir } => {
                let now = OffsetDateTime::now_utc();
                prepare_dir(state_dir)?;
                let ca = LocalCa::load_or_make(state_dir, now)?;
                let names = local_names();
                let server = match read_server_state(state_dir) {
                    Some(state) if !needs_renewal(&state, &names, now) => state,
                    _ => issue_server_certificate(state_dir, &ca, names, now)?,
                };
                let server_config = load_server_files(state_dir)?;
                let summary = format!(
                    "certificate by the local CA in {} for {}, valid until {}",
                    state_dir.display(),
                    server.names.join(" "),
                    date(server.not_after)
                );
                Ok(Certificates {
                    server_config,
                    ca_der: Some(ca.cert_der.to_vec()),
                    generated: Some(Generated { dir: state_dir.clone(), ca, server }),
                    summary,
                })
            }
        }
    }

    /// The generated server certificate's names, its end, and when it is
    /// renewed (Unix seconds); `None` with `--tls-cert`.
    pub fn generated(&self) -> Option<(&[String], i64, i64)> {
        self.generated.as_ref().map(|generated| {
            let not_after = generated.server.not_after;
            (generated.server.names.as_slice(), not_after, not_after - RENEW_BEFORE.as_secs() as i64)
        })
    }

    /// Renew the generated certificate if it is about to expire or the
    /// machine's names changed. `Ok(Some(reason))` when it was renewed
    /// (`server_config` is then the new one).
    pub fn refresh(&mut self) -> Result<Option<String>, TlsError> {
        let Some(generated) = &mut self.generated else { return Ok(None) };
        let now = OffsetDateTime::now_utc();
        let names = local_names();
        if !needs_renewal(&generated.server, &names, now) {
            return Ok(None);
        }
        let reason = if names != generated.server.names {
            format!("names changed from {} to {}", generated.server.names.join(" "), names.join(" "))
        } else {
            format!("it expires on {}", date(generated.server.not_after))
        };
        let server = issue_server_certificate(&generated.dir, &generated.ca, names, now)?;
        self.server_config = load_server_files(&generated.dir)?;
        generated.server = server;
        Ok(Some(reason))
    }
}

/// The daemon's own certificate authority.
struct LocalCa {
    key: KeyPair,
    /// The name it signs as; derived from its key, so the same after a restart.
    params: CertificateParams,
    cert_der: CertificateDer<'static>,
    /// `ca.crt` as written, to end each server chain with.
    cert_pem: String,
}

impl LocalCa {
    fn load_or_make(dir: &Path, now: OffsetDateTime) -> Result<LocalCa, TlsError> {
        let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.crt"));
        if key_path.exists() || cert_path.exists() {
            let pem = fs::read_to_string(&key_path).map_err(|error| fail(&key_path, error))?;
            let key = KeyPair::from_pem(&pem).map_err(|error| fail(&key_path, format!("not a usable key: {error}")))?;
            let cert_pem = fs::read_to_string(&cert_path).map_err(|error| fail(&cert_path, error))?;
            let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
                .map_err(|error| fail(&cert_path, format!("not a PEM certificate: {error}")))?;
            let params = ca_params(&key, now);
            return Ok(LocalCa { key, params, cert_der, cert_pem });
        }
        let key = KeyPair::generate().map_err(|error| fail(&key_path, format!("cannot make a key: {error}")))?;
        let params = ca_params(&key, now);
        let cert = params.self_signed(&key).map_err(|error| fail(&cert_path, error))?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
        log::info!("made a local certificate authority: {}", cert_path.display());
        Ok(LocalCa { key, params, cert_der: cert.der().clone(), cert_pem: cert.pem() })
    }
}

/// The CA's parameters. Its common name ends in a hash of its public key:
/// unique per installation (two intercoms in one house are two CAs with two
/// names on a phone's list), and the same after every restart.
fn ca_params(key: &KeyPair, now: OffsetDateTime) -> CertificateParams {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
    let tag: String = digest.as_ref()[..4].iter().map(|byte| format!("{byte:02x}")).collect();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "intercomd");
    name.push(DnType::CommonName, format!("intercomd local CA {tag}"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = now - BACKDATE;
    params.not_after = now + time::Duration::days(CA_DAYS);
    params
}

/// Make a new server key and certificate for `names`, signed by `ca`, and
/// write them (and `server.json`) to `dir`.
fn issue_server_certificate(
    dir: &Path,
    ca: &LocalCa,
    names: Vec<String>,
    now: OffsetDateTime,
) -> Result<ServerState, TlsError> {
    let cert_path = dir.join("server.crt");
    let key = KeyPair::generate().map_err(|error| fail(&cert_path, format!("cannot make a key: {error}")))?;
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    // The host name if it has one: what a person sees in the browser's
    // certificate viewer. The names that count are in subjectAltName.
    let host = names.iter().find(|name| name.parse::<IpAddr>().is_err() && !name.contains('.') && *name != "localhost");
    subject.push(DnType::CommonName, host.cloned().unwrap_or_else(|| "localhost".into()));
    params.distinguished_name = subject;
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => name.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()
        .map_err(|error| fail(&cert_path, format!("a name of this machine cannot go in a certificate: {error}")))?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    // The backdating counts towards the 825 days.
    params.not_after = params.not_before + time::Duration::days(SERVER_CERT_DAYS);
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).map_err(|error| fail(&cert_path, error))?;
    write_file(&dir.join("server.key"), key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, format!("{}{}", cert.pem(), ca.cert_pem).as_bytes(), 0o644)?;
    let state = ServerState { names, not_after: params.not_after.unix_timestamp() };
    let json = serde_json::to_vec_pretty(&state).expect("plain data serializes");
    write_file(&dir.join("server.json"), &json, 0o644)?;
    log::info!("made a server certificate for {}, valid until {}", state.names.join(" "), date(state.not_after));
    Ok(state)
}

fn needs_renewal(state: &ServerState, names: &[String], now: OffsetDateTime) -> bool {
    let renew_at = state.not_after - RENEW_BEFORE.as_secs() as i64;
    state.names != names || now.unix_timestamp() >= renew_at
}

fn read_server_state(dir: &Path) -> Option<ServerState> {
    let bytes = fs::read(dir.join("server.json")).ok()?;
    let state: ServerState = serde_json::from_slice(&bytes).ok()?;
    // Only trust the record if the files it describes are there.
    (dir.join("server.crt").is_file() && dir.join("server.key").is_file()).then_some(state)
}

fn load_server_files(dir: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    let chain = read_chain(&cert_path)?;
    let key = read_key(&key_path)?;
    server_config(chain, key).map_err(|error| fail(&key_path, error))
}

/// The names a device may use to reach this machine: its host name, the
/// same with `.local` (mDNS, which Raspberry Pi OS answers), `localhost`,
/// and every address of every interface. Sorted, so that a change in the
/// order interfaces are listed is not a change.
pub fn local_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    if is_dns_name(&host) && host != "localhost" {
        if host.contains('.') {
            names.push(host);
        } else {
            names.push(format!("{host}.local"));
            names.push(host);
        }
    }
    let mut addresses = interface_addresses();
    addresses.extend([IpAddr::from([127, 0, 0, 1]), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])]);
    names.extend(addresses.iter().map(IpAddr::to_string));
    names.sort();
    names.dedup();
    names
}

/// Every address of every interface (none if they cannot be listed).
pub fn interface_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|interfaces| interfaces.into_iter().map(|interface| interface.ip()).collect())
        .unwrap_or_default()
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

/// The rustls configuration for one certificate chain: TLS 1.3 with the
/// ring provider, HTTP/1.1 only (the WebSocket upgrade needs it).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    // Only what browsers need, so that the linker can drop the rest of ring
    // (AES-256, P-384 key exchange): AES-128-GCM (every TLS 1.3 client),
    // ChaCha20-Poly1305 (phones without AES instructions), X25519 and P-256.
    use rustls::crypto::ring::{cipher_suite, default_provider, kx_group};
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![cipher_suite::TLS13_AES_128_GCM_SHA256, cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        ..default_provider()
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| error.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    fs::metadata(path).map_err(|error| fail(path, error))?;
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|error| fail(path, format!("cannot read certificates: {error}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| fail(path, format!("not a PEM certificate chain: {error}")))?;
    if chain.is_empty() {
        return Err(fail(path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    fs::metadata(path).map_err(|error| fail(path, error))?;
    PrivateKeyDer::from_pem_file(path).map_err(|error| fail(path, format!("holds no usable PEM private key: {error}")))
}

/// The state directory, made if missing, readable by nobody else.
fn prepare_dir(dir: &Path) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(|error| fail(dir, format!("cannot make the state directory: {error}")))?;
    let metadata = fs::metadata(dir).map_err(|error| fail(dir, error))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|error| fail(dir, format!("cannot restrict the state directory to its owner: {error}")))?;
    }
    Ok(())
}

/// Write `bytes` to `path` through a temporary file and a rename, so a crash
/// or a full disk never leaves half a key behind; keys get mode 0600 from
/// the moment the file exists.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let temporary = path.with_extension("new");
    let _ = fs::remove_file(&temporary);
    let written = (|| -> io::Result<()> {
        let mut file: File = OpenOptions::new().write(true).create_new(true).mode(mode).open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    written.map_err(|error| {
        let _ = fs::remove_file(&temporary);
        fail(path, format!("cannot write: {error}"))
    })
}

/// `2028-03-01` for the log.
fn date(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix).map(|t| t.date().to_string()).unwrap_or_else(|_| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_on_new_names_or_near_expiry() {
        let now = OffsetDateTime::now_utc();
        let names = vec!["localhost".to_string(), "10.0.0.2".to_string()];
        let fresh = ServerState { names: names.clone(), not_after: (now + time::Duration::days(400)).unix_timestamp() };
        assert!(!needs_renewal(&fresh, &names, now));
        assert!(needs_renewal(&fresh, &["localhost".to_string(), "10.0.0.3".to_string()], now));
        let old = ServerState { names: names.clone(), not_after: (now + time::Duration::days(29)).unix_timestamp() };
        assert!(needs_renewal(&old, &names, now));
    }

    #[test]
    fn host_names_are_checked_before_they_go_in_a_certificate() {
        assert!(is_dns_name("raspberrypi"));
        assert!(is_dns_name("pi-4.home.arpa"));
        assert!(!is_dns_name("-pi"));
        assert!(!is_dns_name("pi_4"));
        assert!(!is_dns_name(""));
        assert!(local_names().contains(&"127.0.0.1".to_string()));
    }
}
