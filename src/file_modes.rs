//! Files that hold secrets stay private to labpool's user: they are created
//! 0600 (directories 0700), and a command refuses to start on one that
//! group or others can open — the way JupyterHub refuses a readable cookie
//! secret — saying the `chmod` that fixes it. Refusing beats fixing it
//! silently: a readable file may already have been copied.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Permission bits for group and others.
const SHARED: u32 = 0o077;

/// A secret-holding file that group or others may open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{path} ({what}) is open to group or others (mode {mode:04o}); labpool refuses to start: run `chmod 600 {quoted}` (and consider every secret in it exposed)",
    path = path.display(),
    quoted = shell_quote(path)
)]
pub struct Exposed {
    pub path: PathBuf,
    pub what: String,
    pub mode: u32,
}

/// Refuses `path` if it exists and group or others have any permission on
/// it. A missing file is fine (labpool creates it private).
pub fn refuse_shared(path: &Path, what: &str) -> Result<(), Exposed> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & SHARED != 0 {
        return Err(Exposed {
            path: path.to_owned(),
            what: what.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Creates `dir` and its missing parents with mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// `path` as one shell word.
fn shell_quote(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c));
    if plain && !text.is_empty() {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_open_to_others_is_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("it's.db");
        assert_eq!(refuse_shared(&file, "the store"), Ok(()));
        std::fs::write(&file, "x").unwrap();
        for (mode, refused) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let outcome = refuse_shared(&file, "the store");
            assert_eq!(outcome.is_err(), refused, "{mode:o}");
            if let Err(e) = outcome {
                let text = e.to_string();
                let quoted = format!(
                    "chmod 600 '{}'",
                    file.display().to_string().replace('\'', r"'\''")
                );
                assert!(text.contains(&quoted), "{text}");
                assert!(text.contains(&format!("mode {mode:04o}")), "{text}");
            }
        }
    }
}
