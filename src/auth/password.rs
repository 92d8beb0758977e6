//! Password hashing with Argon2id (the crate's defaults: 19 MiB, 2 passes), run on
//! the blocking pool so that a login never stalls the request threads.

use std::sync::OnceLock;

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};

/// Shortest and longest password a user may set.
pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 256;

/// Checks a new password against the policy; the message names no part of it.
pub fn check_policy(password: &str) -> Result<(), String> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(format!("password must be at least {MIN_LEN} characters"));
    }
    if password.len() > MAX_LEN {
        return Err(format!("password must be at most {MAX_LEN} bytes"));
    }
    Ok(())
}

/// The PHC string (`$argon2id$v=19$…`) of `password`, with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("password hashing failed: {e}"))
}

/// Whether `password` matches the PHC string `stored`.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Spends the same work as [`verify`] for a user that does not exist, so that the
/// answer's timing does not tell which usernames are real.
pub fn verify_nobody(password: &str) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    if let Some(stored) = DUMMY.get_or_init(|| hash(&crate::secret::generate_token()).ok()) {
        let _ = verify(password, stored);
    }
}

/// Hashes running at once. Each takes 19 MiB and a core for tens of milliseconds, so
/// a flood of logins waits here instead of filling the blocking pool (up to 512
/// threads, nearly 10 GiB of hashing memory).
fn hashing_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores * 2)
    })
}

/// Runs `work` on the blocking pool once a hashing slot is free.
async fn run_hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = hashing_slots().acquire().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

/// [`hash`] on the blocking pool.
pub async fn hash_blocking(password: String) -> Result<String, String> {
    run_hashing(move || hash(&password))
        .await
        .ok_or_else(|| "password hashing task failed".to_string())?
}

/// [`verify`] (or [`verify_nobody`] when `stored` is `None`) on the blocking pool.
pub async fn verify_blocking(password: String, stored: Option<String>) -> bool {
    run_hashing(move || match stored {
        Some(stored) => verify(&password, &stored),
        None => {
            verify_nobody(&password);
            false
        }
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify("correct horse", &a));
        assert!(!verify("correct horsf", &a));
        assert!(!verify("correct horse", "not a hash"));
    }

    #[test]
    fn policy_wants_eight_characters() {
        assert!(check_policy("short").is_err());
        assert!(check_policy("long enough").is_ok());
        assert!(check_policy(&"x".repeat(300)).is_err());
    }
}
