//! Where a proxy's bearer token comes from.
//!
//! In Kubernetes a proxy presents a projected service-account token that the kubelet
//! rewrites before it expires, so a token read once at startup stops working after an
//! hour or so. [`TokenSource::File`] re-reads the file on every use (each CSR, each
//! config-stream (re)connect); a read failure is an error of that attempt only, and the
//! caller keeps what it has and retries.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why the current token cannot be had.
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("reading the token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {} is empty", path.display())]
    Empty { path: PathBuf },
}

/// A bearer token, fixed or re-read from a file on each use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A fixed token (surrounding whitespace ignored); empty means "send no token".
    Static(String),
    /// A file holding the token (surrounding whitespace ignored), read on each use.
    File(PathBuf),
}

impl Default for TokenSource {
    fn default() -> Self {
        TokenSource::Static(String::new())
    }
}

impl From<String> for TokenSource {
    fn from(token: String) -> Self {
        TokenSource::Static(token)
    }
}

impl From<&str> for TokenSource {
    fn from(token: &str) -> Self {
        TokenSource::Static(token.to_string())
    }
}

impl TokenSource {
    /// The usual pair of flags: a token file, when given, wins over a literal token.
    pub fn from_flags(token: &str, file: Option<&Path>) -> Self {
        match file {
            Some(path) => TokenSource::File(path.to_path_buf()),
            None => TokenSource::Static(token.to_string()),
        }
    }

    /// The token to present now.
    pub fn current(&self) -> Result<String, TokenError> {
        match self {
            // A token is a header value: a newline from `$(cat file)`-less env files or
            // `controlplane token > file` would make every request invalid.
            TokenSource::Static(token) => Ok(token.trim().to_string()),
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                    path: path.clone(),
                    source,
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(TokenError::Empty { path: path.clone() });
                }
                Ok(token.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_token_is_returned_as_given() {
        assert_eq!(TokenSource::from("abc").current().unwrap(), "abc");
        assert_eq!(TokenSource::default().current().unwrap(), "");
    }

    #[test]
    fn a_token_file_is_reread_on_each_use_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("meshwork-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let src = TokenSource::from_flags("ignored", Some(&path));
        assert_eq!(src.current().unwrap(), "first");
        std::fs::write(&path, "  second  \n").unwrap();
        assert_eq!(src.current().unwrap(), "second");
        std::fs::write(&path, "\n").unwrap();
        let e = src.current().unwrap_err();
        assert!(matches!(e, TokenError::Empty { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_static_token_is_trimmed_like_a_file_one() {
        assert_eq!(TokenSource::from("tok\n").current().unwrap(), "tok");
        assert_eq!(
            TokenSource::from_flags(" tok\r\n", None).current().unwrap(),
            "tok"
        );
        assert_eq!(TokenSource::from("\n").current().unwrap(), "");
    }

    #[test]
    fn a_token_file_written_with_a_trailing_newline_is_a_valid_header_value() {
        let dir = std::env::temp_dir().join(format!("meshwork-token-nl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "node-a.0123456789abcdef\n").unwrap();
        let token = TokenSource::File(path).current().unwrap();
        assert!(
            tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")).is_ok(),
            "{token:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_token_file_names_the_file() {
        let path = PathBuf::from("/nonexistent/meshwork/token");
        let e = TokenSource::File(path).current().unwrap_err();
        assert!(matches!(e, TokenError::Read { .. }));
        assert!(
            e.to_string()
                .starts_with("reading the token file /nonexistent/meshwork/token: "),
            "{e}"
        );
    }

    #[test]
    fn flags_without_a_file_give_the_literal_token() {
        assert_eq!(
            TokenSource::from_flags("tok", None),
            TokenSource::Static("tok".into())
        );
    }
}
