//! The key that seals database URLs in the control database: `SECRET_KEY` (and
//! `SECRET_KEY_PREVIOUS`), or else a key generated once into `SECRET_KEY_FILE`,
//! written whole or not at all so that replicas sharing it never read half a key.

use super::Settings;

impl Settings {
    /// The box that seals database URLs in the control database: `SECRET_KEY` (and
    /// `SECRET_KEY_PREVIOUS`), or else a key generated once into `SECRET_KEY_FILE`.
    pub fn secret_box(&self) -> Result<crate::secret::SecretBox, String> {
        use crate::secret::SecretBox;
        let previous = self
            .secret_key_previous
            .as_ref()
            .map(|k| k.expose().to_string());
        if let Some(key) = &self.secret_key {
            return SecretBox::from_hex(key.expose(), previous.as_deref())
                .map_err(|e| format!("settings: {e}"));
        }
        let path = &self.secret_key_file;
        // In production the key comes from SECRET_KEY only. Made up, or read from
        // a file each replica may have made for itself, it could differ from
        // replica to replica, each refusing the URLs the others sealed.
        if self.is_production() {
            let required = "settings: SECRET_KEY is required when APP_ENV=production (64 hex characters, the same on every replica)";
            return Err(if path.exists() {
                format!(
                    "{required}; this install's key so far is in {}: set SECRET_KEY to it, on every replica",
                    path.display()
                )
            } else {
                required.to_string()
            });
        }
        let key = match std::fs::read_to_string(path) {
            Ok(key) => key,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SecretBox::generate_hex();
                match write_private_once(path, &key) {
                    Ok(true) => {
                        tracing::warn!(file = %path.display(), "SECRET_KEY is not set: generated a key into this file; set SECRET_KEY in production");
                        key
                    }
                    // Another process (a replica starting beside this one) got there first.
                    Ok(false) => std::fs::read_to_string(path)
                        .map_err(|e| format!("settings: cannot read {}: {e}", path.display()))?,
                    Err(e) => {
                        return Err(format!("settings: cannot write {}: {e}", path.display()));
                    }
                }
            }
            Err(e) => return Err(format!("settings: cannot read {}: {e}", path.display())),
        };
        SecretBox::from_hex(&key, previous.as_deref())
            .map_err(|e| format!("settings: {}: {e}", path.display()))
    }
}

/// Writes a new file readable by its owner only.
/// Creates `path` (mode 0600) holding `text`, all or nothing: the text goes to a
/// temporary file that is synced and then linked to `path`, so a crash at any moment
/// leaves either no file or the whole text, never an empty or partial key. `Ok(false)`
/// when `path` already exists (it is left as it is).
fn write_private_once(path: &std::path::Path, text: &str) -> std::io::Result<bool> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A temporary file of an earlier crashed process with the same pid.
    let _ = std::fs::remove_file(&temp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    })();
    let linked = written.and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            // Make the new name itself durable.
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_file_is_written_once_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("secret.key");
        assert!(write_private_once(&path, "first").unwrap());
        assert!(!write_private_once(&path, "second").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret.key")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
