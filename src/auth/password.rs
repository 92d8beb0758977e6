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
fn hashing_slots() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static SLOTS: OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        std::sync::Arc::new(tokio::sync::Semaphore::new(cores * 2))
    })
}

/// Runs `work` on the blocking pool once a hashing slot is free. The slot goes
/// with the work, not with the request: a client that hangs up does not stop a
/// hash begun for it, so the hash holds its slot to its end (held by the request,
/// a flood of logins dropped mid-hash ran any number of hashes at once).
async fn run_hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    run_in_slot(hashing_slot().await?, work).await
}

/// A hashing slot, taken: see [`hashing_slot`]. Held (not read) until the hash
/// in it ends.
pub struct HashingSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

/// Waits for a hashing slot (`None` only if the slots are gone): for a caller
/// that must know when its hash is about to start (a login counts its attempt
/// from then on, not while it queues).
pub async fn hashing_slot() -> Option<HashingSlot> {
    hashing_slots()
        .clone()
        .acquire_owned()
        .await
        .ok()
        .map(HashingSlot)
}

async fn run_in_slot<T: Send + 'static>(
    slot: HashingSlot,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        work()
    })
    .await
    .ok()
}

/// [`hash`] on the blocking pool.
pub async fn hash_blocking(password: String) -> Result<String, String> {
    run_hashing(move || hash(&password))
        .await
        .ok_or_else(|| "password hashing task failed".to_string())?
}

/// [`verify`] (or [`verify_nobody`] when `stored` is `None`) on the blocking pool.
pub async fn verify_blocking(password: String, stored: Option<String>) -> bool {
    match hashing_slot().await {
        Some(slot) => verify_in_slot(slot, password, stored).await,
        None => false,
    }
}

/// [`verify_blocking`] in a slot already taken.
pub async fn verify_in_slot(slot: HashingSlot, password: String, stored: Option<String>) -> bool {
    run_in_slot(slot, move || match stored {
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

    /// A hash whose request is dropped keeps its slot until the hash ends.
    #[tokio::test]
    async fn a_dropped_request_leaves_its_hash_holding_the_slot() {
        use std::sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        };
        let slots = hashing_slots().available_permits();
        let started = Arc::new(AtomicUsize::new(0));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(std::sync::Mutex::new(held));
        let requests: Vec<_> = (0..slots)
            .map(|_| {
                let (started, held) = (started.clone(), held.clone());
                tokio::spawn(run_hashing(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    let _ = held.lock().unwrap().recv();
                }))
            })
            .collect();
        let since = std::time::Instant::now();
        while started.load(Ordering::SeqCst) < slots {
            assert!(since.elapsed() < std::time::Duration::from_secs(30));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The clients hang up while their hashes run.
        for request in &requests {
            request.abort();
        }
        for request in requests {
            let _ = request.await;
        }
        let cap = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        assert!(
            hashing_slots().available_permits() + slots <= cap,
            "the slots came back with the hashes still running"
        );
        for _ in 0..slots {
            let _ = release.send(());
        }
    }

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
