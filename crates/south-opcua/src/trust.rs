//! airlock's OPC UA identity and trust list, on local disk under the data directory:
//! - `opcua/own/cert.der` and `opcua/own/private.pem`: the application instance certificate,
//!   generated on first start (self-signed, RSA 2048) and kept, shared by every OPC UA device so
//!   a server's administrator trusts airlock once;
//! - `opcua/<device>/trusted/`: exactly the server certificates the config trusts for that
//!   device, written afresh at every start; `opcua/<device>/rejected/`: where a server
//!   certificate that is not trusted is put, so its thumbprint can be named in the error.
//!
//! The private key is the gateway's: `opcua/` and `opcua/own/` are made readable by airlock's
//! user only (0700) before the key is generated in them, and the key file itself 0600. The
//! paths are absolute, so one key serves every device whatever the working directory (with a
//! relative `data_dir`, the OPC UA library resolved the key's path against each device's
//! folder and made a key per device).

use std::path::{Path, PathBuf};

use opcua::crypto::{CertificateStore, X509};

/// The application URI in airlock's certificate and session.
pub const APPLICATION_URI: &str = "urn:airlock";

/// Where one device's certificates live.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The device's store: `trusted/`, `rejected/`.
    pub dir: PathBuf,
    pub own_cert: PathBuf,
    pub own_key: PathBuf,
}

impl Pki {
    pub fn new(data_dir: &Path, device: &str) -> Self {
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        let opcua = data_dir.join("opcua");
        Self {
            dir: opcua.join(device),
            own_cert: opcua.join("own").join("cert.der"),
            own_key: opcua.join("own").join("private.pem"),
        }
    }

    /// Makes the folders and writes the trust list: the certificates in `trusted` (DER or PEM
    /// files), and nothing else. A file that is not a certificate is an error naming it.
    pub fn prepare(&self, trusted: &[PathBuf]) -> Result<(), String> {
        let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
        for sub in ["trusted", "rejected"] {
            let d = self.dir.join(sub);
            if d.exists() {
                std::fs::remove_dir_all(&d).map_err(|e| io(&d, e))?;
            }
            std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
        }
        if let Some(own) = self.own_cert.parent() {
            std::fs::create_dir_all(own).map_err(|e| io(own, e))?;
            for private in [Some(own), own.parent()].into_iter().flatten() {
                set_mode(private, 0o700).map_err(|e| io(private, e))?;
            }
            if self.own_key.exists() {
                set_mode(&self.own_key, 0o600).map_err(|e| io(&self.own_key, e))?;
            }
        }
        for path in trusted {
            let cert = read_certificate(path)?;
            let der = cert.to_der().map_err(|e| format!("{}: {e}", path.display()))?;
            let to = self.dir.join("trusted").join(CertificateStore::cert_file_name(&cert));
            std::fs::write(&to, der).map_err(|e| io(&to, e))?;
        }
        Ok(())
    }

    /// The thumbprints (SHA-1, hex) and files of the server certificates refused so far.
    pub fn rejected(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("rejected")) else { return Vec::new() };
        let mut out: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter_map(|p| read_certificate(&p).ok().map(|c| (c.thumbprint().as_hex_string(), p)))
            .collect();
        out.sort();
        out
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

/// A certificate file, DER or PEM.
pub fn read_certificate(path: &Path) -> Result<X509, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the certificate {}: {e}", path.display()))?;
    let cert = if bytes.starts_with(b"-----BEGIN") { X509::from_pem(&bytes) } else { X509::from_der(&bytes) };
    cert.map_err(|e| format!("{} is not an X.509 certificate (DER or PEM): {e}", path.display()))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_private_key_is_the_gateways_alone_and_one_for_every_device() {
        let dir = std::env::temp_dir().join(format!("airlock-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp folder");
        let (press, cell) = (Pki::new(&dir, "press1"), Pki::new(&dir, "cell2"));
        assert_eq!(press.own_key, cell.own_key, "one key per gateway");
        let relative = Pki::new(Path::new("data"), "press1");
        assert!(relative.own_key.is_absolute() && relative.dir.is_absolute(), "{relative:?}");
        // A key left world-readable (as the library writes it) is closed on the next start.
        press.prepare(&[]).expect("prepare");
        std::fs::write(&press.own_key, "-----BEGIN PRIVATE KEY-----").expect("a key file");
        std::fs::set_permissions(&press.own_key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        press.prepare(&[]).expect("prepare again");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&press.own_key), 0o600);
        assert_eq!(mode(press.own_key.parent().expect("own")), 0o700);
        assert_eq!(mode(&dir.join("opcua")), 0o700);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
