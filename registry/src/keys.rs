//! API key material: the `nmb_<id>_<secret>` format, generation from the OS random source, the
//! server-side pepper (`<data_dir>/pepper`) and the peppered hash that is all the database keeps.
//! Secrets live only in memory here; nothing in this module logs or stores them.

use std::fmt;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "nmb_";
/// Length of the public id part.
pub(crate) const ID_LEN: usize = 12;
const SECRET_MIN: usize = 32;
const SECRET_MAX: usize = 128;
const PEPPER_LEN: usize = 32;

/// The two parts of a well-formed key.
pub(crate) struct ParsedKey<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

/// Splits `nmb_<id>_<secret>`: id = 12 of `[a-z0-9]`, secret = 32..=128 of `[A-Za-z0-9]`.
pub(crate) fn parse(token: &str) -> Option<ParsedKey<'_>> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let secret_ok = (SECRET_MIN..=SECRET_MAX).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    (id_ok && secret_ok).then_some(ParsedKey { id, secret })
}

/// A fresh key: (id, secret, full key). The secret is 32 random bytes as hex.
pub(crate) fn generate() -> anyhow::Result<(String, String, String)> {
    let id = random_id()?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("OS random source failed: {e}"))?;
    let secret = hex::encode(raw);
    let full = format!("{PREFIX}{id}_{secret}");
    Ok((id, secret, full))
}

/// 12 characters of `[a-z0-9]`, uniformly drawn (rejection sampling on random bytes).
fn random_id() -> anyhow::Result<String> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::with_capacity(ID_LEN);
    while id.len() < ID_LEN {
        let mut buf = [0u8; 32];
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("OS random source failed: {e}"))?;
        for b in buf {
            // 252 = 7 * 36: bytes above it would bias the first characters.
            if b < 252 && id.len() < ID_LEN {
                id.push(ALPHABET[(b % 36) as usize] as char);
            }
        }
    }
    Ok(id)
}

/// The server-side secret mixed into every key hash, so a copy of the database alone does not
/// allow checking guessed secrets.
pub(crate) struct Pepper([u8; PEPPER_LEN]);

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(..)")
    }
}

impl Pepper {
    /// Reads `<data_dir>/pepper`, or creates it (32 random bytes, mode 0600) on first open.
    /// Creation writes a temp file and links it into place without clobbering, so two
    /// processes starting at once agree on one pepper and a crash never leaves a short file.
    pub(crate) fn load_or_create(data_dir: &Path) -> anyhow::Result<Pepper> {
        let path = data_dir.join("pepper");
        if !path.exists() {
            let mut bytes = [0u8; PEPPER_LEN];
            getrandom::fill(&mut bytes)
                .map_err(|e| anyhow::anyhow!("OS random source failed: {e}"))?;
            // tempfile creates files with mode 0600 on unix.
            let mut tmp = tempfile::NamedTempFile::new_in(data_dir)
                .with_context(|| format!("creating a temp file in {}", data_dir.display()))?;
            tmp.write_all(&bytes)?;
            tmp.as_file().sync_all()?;
            match tmp.persist_noclobber(&path) {
                Ok(_) => sync_dir(data_dir)?,
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e.error).with_context(|| format!("writing {}", path.display()));
                }
            }
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let bytes: [u8; PEPPER_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
            anyhow::anyhow!(
                "{} holds {} bytes, expected {PEPPER_LEN}: it is damaged; without the original every API key must be re-created",
                path.display(),
                b.len()
            )
        })?;
        Ok(Pepper(bytes))
    }

    /// A pepper given as 64 hex characters (from a secret every node shares).
    pub(crate) fn from_hex(hex: &str) -> anyhow::Result<Pepper> {
        let bytes = hex::decode(hex.trim())
            .ok()
            .and_then(|b| <[u8; PEPPER_LEN]>::try_from(b).ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the key pepper must be {} hex characters (e.g. `openssl rand -hex 32`)",
                    PEPPER_LEN * 2
                )
            })?;
        Ok(Pepper(bytes))
    }

    /// A fingerprint that tells peppers apart without revealing them: sha256 of a label and the
    /// pepper, as hex.
    pub(crate) fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"nimbus key pepper fingerprint\0");
        hasher.update(self.0);
        hex::encode(hasher.finalize())
    }

    /// sha256(pepper || secret).
    pub(crate) fn hash(&self, secret: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(secret.as_bytes());
        hasher.finalize().into()
    }
}

/// Constant-time equality of a stored hash and a computed one.
pub(crate) fn hashes_equal(stored: &[u8], computed: &[u8; 32]) -> bool {
    stored.len() == computed.len() && bool::from(stored.ct_eq(computed.as_slice()))
}

/// fsyncs a directory so a rename or link in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse() {
        let (id, secret, full) = generate().unwrap();
        let parsed = parse(&full).unwrap();
        assert_eq!(parsed.id, id);
        assert_eq!(parsed.secret, secret);
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let good_secret = "a".repeat(32);
        assert!(parse(&format!("nmb_abcdefghijkl_{good_secret}")).is_some());
        for bad in [
            String::new(),
            format!("xyz_abcdefghijkl_{good_secret}"),
            format!("nmb_ABCDEFGHIJKL_{good_secret}"),
            format!("nmb_abcdefghijk_{good_secret}"),
            "nmb_abcdefghijkl_short".to_string(),
            format!("nmb_abcdefghijkl_{good_secret}_x"),
            format!("nmb_abcdefghijkl_{}", "a".repeat(129)),
            format!("nmb_abc/../ghijk_{good_secret}"),
        ] {
            assert!(parse(&bad).is_none(), "{bad} parsed");
        }
    }
}
