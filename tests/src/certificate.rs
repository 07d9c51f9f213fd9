//! Self-signed certificates made by the `openssl` CLI, for TLS servers the tests start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A certificate and its key (PEM files).
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The certificate (its own CA).
    pub cert: PathBuf,
    /// The private key (PKCS#8).
    pub key: PathBuf,
}

impl Certificate {
    /// A self-signed RSA certificate for `localhost` and 127.0.0.1, valid a day, written to
    /// `dir` as `NAME.crt` and `NAME.key`.
    pub fn self_signed(dir: &Path, name: &str) -> Certificate {
        Certificate::self_signed_with(dir, name, &["-newkey", "rsa:2048"])
    }

    /// The same with an EC P-256 key in SEC1 form (`BEGIN EC PRIVATE KEY`), as some tools
    /// write keys.
    pub fn self_signed_ec_sec1(dir: &Path, name: &str) -> Certificate {
        let certificate = Certificate::self_signed_with(
            dir,
            name,
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        let status = Command::new("openssl")
            .args(["ec", "-in"])
            .arg(&certificate.key)
            .arg("-out")
            .arg(&certificate.key)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl ec failed");
        certificate
    }

    /// A certificate for `localhost` and 127.0.0.1 issued by a CA of its own (not a CA
    /// itself, as webpki-based verifiers such as rustls require of a server certificate),
    /// written to `dir` as `NAME.crt` and `NAME.key`; returns it and the CA's certificate
    /// (`NAME-ca.crt`), which clients trust.
    pub fn issued_by_own_ca(dir: &Path, name: &str) -> (Certificate, PathBuf) {
        let ca = Certificate::self_signed(dir, &format!("{name}-ca"));
        let certificate =
            Certificate { cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) };
        let request = dir.join(format!("{name}.csr"));
        let extensions = dir.join(format!("{name}.ext"));
        std::fs::write(&extensions, "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
            .expect("write the extensions file");
        let openssl = |args: &[&std::ffi::OsStr]| {
            let status = Command::new("openssl")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .expect("the openssl CLI runs");
            assert!(status.success(), "openssl {args:?} failed");
        };
        openssl(&[
            "req".as_ref(),
            "-newkey".as_ref(),
            "rsa:2048".as_ref(),
            "-nodes".as_ref(),
            "-subj".as_ref(),
            "/CN=localhost".as_ref(),
            "-keyout".as_ref(),
            certificate.key.as_os_str(),
            "-out".as_ref(),
            request.as_os_str(),
        ]);
        openssl(&[
            "x509".as_ref(),
            "-req".as_ref(),
            "-days".as_ref(),
            "1".as_ref(),
            "-in".as_ref(),
            request.as_os_str(),
            "-CA".as_ref(),
            ca.cert.as_os_str(),
            "-CAkey".as_ref(),
            ca.key.as_os_str(),
            "-CAcreateserial".as_ref(),
            "-extfile".as_ref(),
            extensions.as_os_str(),
            "-out".as_ref(),
            certificate.cert.as_os_str(),
        ]);
        (certificate, ca.cert)
    }

    fn self_signed_with(dir: &Path, name: &str, key_options: &[&str]) -> Certificate {
        let certificate =
            Certificate { cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) };
        let status = Command::new("openssl")
            .args(["req", "-x509"])
            .args(key_options)
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout"])
            .arg(&certificate.key)
            .arg("-out")
            .arg(&certificate.cert)
            .stderr(Stdio::null())
            .status()
            .expect("the openssl CLI runs");
        assert!(status.success(), "openssl could not make a certificate");
        certificate
    }
}
