//! Node bootstrap tokens (file mode).
//!
//! Design: a token is `<node-name>.<hex HMAC-SHA256(secret, node-name)>`. The 32-byte secret
//! lives in the CA directory as `node-token.key` (hex, mode 0600), created on first use. Tokens
//! are therefore stateless (nothing to store per node), deterministic (the CLI/harness can
//! print a node's token at any time with [`NodeTokens::token_for`]) and revoked all at once by
//! deleting the secret. Verification is constant-time.
//!
//! Observer tokens (the CLI, debugging tools: a read-only subscription to the whole model)
//! come from the same secret in a separate domain: `observer:<name>.<hex HMAC(secret,
//! "observer:<name>")>`. Node names can not contain `:` (Kubernetes node names are DNS
//! subdomains), so an observer token never proves a node and a node token never proves an
//! observer.

use std::path::Path;

use meshwork_identity::files::{write_atomic, SECRET_MODE};
use ring::hmac;
use ring::rand::SecureRandom;

use super::error::SignError;

/// File holding the HMAC secret, in the CA directory.
pub const TOKEN_KEY_FILE: &str = "node-token.key";

/// The authenticated name of a node (Kubernetes node name).
pub type NodeName = String;

/// The prefix of observer tokens (and of the names their MAC covers).
pub const OBSERVER_PREFIX: &str = "observer:";

/// Why the token secret cannot be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("node tokens: {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node tokens: {path}: expected 64 hex characters (a 32-byte secret)")]
    Malformed { path: String },
    #[error("node tokens: system randomness unavailable")]
    Random,
    #[error("node tokens: invalid node name {0:?}")]
    NodeName(String),
    #[error("node tokens: invalid observer name {0:?}")]
    ObserverName(String),
}

/// Issues and checks per-node bearer tokens.
#[derive(Clone, Debug)]
pub struct NodeTokens {
    key: hmac::Key,
}

impl NodeTokens {
    pub fn from_secret(secret: &[u8]) -> Self {
        NodeTokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Loads `dir/node-token.key`, creating it with a random secret when absent.
    pub fn open(dir: &Path) -> Result<Self, TokenError> {
        let path = dir.join(TOKEN_KEY_FILE);
        let io = |source| TokenError::Io {
            path: path.display().to_string(),
            source,
        };
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let secret = decode_hex(text.trim())
                .filter(|s| s.len() == 32)
                .ok_or_else(|| TokenError::Malformed {
                    path: path.display().to_string(),
                })?;
            return Ok(Self::from_secret(&secret));
        }
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| TokenError::Random)?;
        std::fs::create_dir_all(dir).map_err(io)?;
        write_atomic(&path, encode_hex(&secret).as_bytes(), SECRET_MODE).map_err(io)?;
        tracing::info!(path = %path.display(), "created node token secret");
        Ok(Self::from_secret(&secret))
    }

    /// The bearer token of `node`.
    pub fn token_for(&self, node: &str) -> Result<String, TokenError> {
        if !valid_name(node) || node.contains(':') {
            return Err(TokenError::NodeName(node.to_string()));
        }
        Ok(self.sign(node))
    }

    /// The node a token belongs to, if it is genuine (never an observer token).
    pub fn authenticate(&self, token: &str) -> Result<NodeName, SignError> {
        let subject = self.verify(token)?;
        if subject.contains(':') {
            return Err(SignError::InvalidToken);
        }
        Ok(subject)
    }

    /// The bearer token of observer `name` (the CLI, a debugging tool).
    pub fn observer_token_for(&self, name: &str) -> Result<String, TokenError> {
        if !valid_name(name) || name.contains(':') {
            return Err(TokenError::ObserverName(name.to_string()));
        }
        Ok(self.sign(&format!("{OBSERVER_PREFIX}{name}")))
    }

    /// The observer an observer token names, if it is genuine.
    pub fn authenticate_observer(&self, token: &str) -> Result<String, SignError> {
        let subject = self.verify(token)?;
        match subject.strip_prefix(OBSERVER_PREFIX) {
            Some(name) if !name.is_empty() => Ok(name.to_string()),
            _ => Err(SignError::InvalidToken),
        }
    }

    fn sign(&self, subject: &str) -> String {
        let tag = hmac::sign(&self.key, subject.as_bytes());
        format!("{subject}.{}", encode_hex(tag.as_ref()))
    }

    /// The subject of a genuine token.
    fn verify(&self, token: &str) -> Result<String, SignError> {
        let (subject, mac) = token.rsplit_once('.').ok_or(SignError::InvalidToken)?;
        let mac = decode_hex(mac).ok_or(SignError::InvalidToken)?;
        if subject.is_empty() {
            return Err(SignError::InvalidToken);
        }
        hmac::verify(&self.key, subject.as_bytes(), &mac).map_err(|_| SignError::InvalidToken)?;
        Ok(subject.to_string())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_their_node_only() {
        let tokens = NodeTokens::from_secret(b"secret");
        let token = tokens.token_for("node-a.example").unwrap();
        assert!(token.starts_with("node-a.example."));
        assert_eq!(tokens.authenticate(&token).unwrap(), "node-a.example");
        // Claiming another node with node-a's MAC fails.
        let forged = token.replace("node-a.example", "node-b");
        assert!(matches!(
            tokens.authenticate(&forged),
            Err(SignError::InvalidToken)
        ));
        // Another secret's token fails.
        let other = NodeTokens::from_secret(b"other")
            .token_for("node-a.example")
            .unwrap();
        assert!(matches!(
            tokens.authenticate(&other),
            Err(SignError::InvalidToken)
        ));
        for bad in ["", "node-a", ".abcd", "node-a.zz", "node-a.abc"] {
            assert!(
                matches!(tokens.authenticate(bad), Err(SignError::InvalidToken)),
                "{bad}"
            );
        }
        assert!(tokens.token_for("").is_err());
        assert!(tokens.token_for("a b").is_err());
    }

    #[test]
    fn observer_and_node_tokens_do_not_stand_in_for_each_other() {
        let tokens = NodeTokens::from_secret(b"secret");
        let obs = tokens.observer_token_for("cli").unwrap();
        assert!(obs.starts_with("observer:cli."), "{obs}");
        assert_eq!(tokens.authenticate_observer(&obs).unwrap(), "cli");
        assert!(
            tokens.authenticate(&obs).is_err(),
            "an observer token is no node token"
        );
        let node = tokens.token_for("node-a").unwrap();
        assert!(
            tokens.authenticate_observer(&node).is_err(),
            "a node token is no observer token"
        );
        assert!(tokens.token_for("observer:cli").is_err());
        assert!(tokens.observer_token_for("").is_err());
        assert!(tokens.observer_token_for("a:b").is_err());
        let other = NodeTokens::from_secret(b"other")
            .observer_token_for("cli")
            .unwrap();
        assert!(tokens.authenticate_observer(&other).is_err());
        assert!(tokens.authenticate_observer("observer:cli").is_err());
    }

    #[test]
    fn secret_is_persisted_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = NodeTokens::open(dir.path())
            .unwrap()
            .token_for("n1")
            .unwrap();
        let mode = std::fs::metadata(dir.path().join(TOKEN_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let reopened = NodeTokens::open(dir.path()).unwrap();
        assert_eq!(reopened.token_for("n1").unwrap(), first);
        assert_eq!(reopened.authenticate(&first).unwrap(), "n1");
    }

    #[test]
    fn malformed_secret_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_KEY_FILE), "not hex").unwrap();
        let err = NodeTokens::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains(TOKEN_KEY_FILE), "{err}");
    }
}
