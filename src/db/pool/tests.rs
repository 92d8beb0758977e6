//! The connection layer's guarantees, on real SQLite files (and one PostgreSQL
//! database when `TEST_DATABASE_URL` is set). Waits are bounded loops on a
//! condition, never a fixed sleep that the test relies on.

use std::{
    path::Path,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use sea_orm::{
    ConnectionTrait, DbBackend, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait,
};

use super::*;
use crate::db::{
    conn::{Checkout, TenantConn},
    testing::PgTestDb,
};

const CONNECT: Duration = Duration::from_secs(5);
/// Long enough that no checkout meant to succeed runs into it.
const PATIENT: Duration = Duration::from_secs(30);

fn sqlite_target(dir: &Path, file: &str) -> Target {
    let url = format!("sqlite://{}", dir.join(file).display());
    Target::parse(&crate::db::prepare_url(&url).unwrap()).unwrap()
}

fn budget(target: &Target, limit: u32) -> Arc<ServerBudget> {
    ServerBudget::new(target, Some(limit), None, CONNECT)
}

fn pool(server: &Arc<ServerBudget>, target: Target, idle_timeout: Duration) -> Arc<ConnPool> {
    ConnPool::new(server.clone(), target, idle_timeout, CONNECT)
}

fn in_(d: Duration) -> Instant {
    Instant::now() + d
}

/// Polls `cond` every 10 ms for up to 30 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A request's connection, as the registry hands it out.
async fn tenant_conn(pool: &Arc<ConnPool>, schema: Option<&str>) -> TenantConn {
    let conn = pool
        .checkout(schema.map(Arc::from), in_(PATIENT))
        .await
        .unwrap();
    TenantConn::new(Checkout::new(conn, pool.clone(), None))
}

async fn int(db: &impl ConnectionTrait, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

async fn ints(db: &impl ConnectionTrait, sql: &str) -> Vec<i64> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<i32>(0).map(i64::from).unwrap())
        .collect()
}

/// SQLite is built with `.cargo/config.toml`'s options:
/// - without its memory statistics: they put every allocation of every connection
///   behind one process-wide mutex, and with a thread per connection over many
///   files those threads queue on it;
/// - with the query planner stability guarantee on (`ENABLE_QPSG`): otherwise the
///   planner reads a bound `LIMIT`'s value and marks the statement to be prepared
///   again whenever it is bound anew, so every list (sea-query binds its `LIMIT`)
///   was parsed and planned again on every request.
#[tokio::test]
async fn sqlite_is_built_with_the_options_the_router_needs() {
    let dir = tempfile::tempdir().unwrap();
    let target = sqlite_target(dir.path(), "t.db");
    let p = pool(&budget(&target, 1), target, PATIENT);
    let db = tenant_conn(&p, None).await;
    let options: Vec<String> = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA compile_options",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect();
    for needed in ["DEFAULT_MEMSTATUS=0", "ENABLE_QPSG"] {
        assert!(
            options.iter().any(|o| o == needed),
            "SQLite is built without {needed}; its compile options: {options:?}"
        );
    }
}

/// Guarantee 1: however many checkouts run at once across the pools of one
/// server, no more than its limit of connections is ever open, and every
/// checkout is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_budget_is_never_exceeded() {
    const LIMIT: u32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let first = sqlite_target(dir.path(), "t0.db");
    let server = budget(&first, LIMIT);
    let mut pools = vec![pool(&server, first, PATIENT)];
    for i in 1..4 {
        pools.push(pool(
            &server,
            sqlite_target(dir.path(), &format!("t{i}.db")),
            PATIENT,
        ));
    }

    // Samples the server's count while the checkouts run. (Not the sum of the
    // pools' counts: read one pool after another, it can count a connection
    // twice, once in the pool that closed it and once in the pool that opened
    // one in its slot; it is compared with the server's count once all is quiet.)
    let done = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicU64::new(0));
    let monitor = {
        let (done, max_seen, server) = (done.clone(), max_seen.clone(), server.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                max_seen.fetch_max(server.stats().open, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };

    let mut tasks = Vec::new();
    for i in 0..48 {
        let pool = pools[i % pools.len()].clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let mut conn = pool.checkout(None, in_(PATIENT)).await?;
                conn.raw.execute_simple("SELECT 1").await.unwrap();
                tokio::task::yield_now().await;
                pool.give_back(conn, true);
            }
            Ok::<(), CheckoutError>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    monitor.await.unwrap();

    let stats = server.stats();
    assert!(
        max_seen.load(Ordering::Relaxed) <= u64::from(LIMIT),
        "{} connections open at once, limit {LIMIT}",
        max_seen.load(Ordering::Relaxed)
    );
    assert!(stats.open <= u64::from(LIMIT), "{stats:?}");
    let by_pools: u64 = pools.iter().map(|p| u64::from(p.stats().open)).sum();
    assert_eq!(by_pools, stats.open, "the pools and their server disagree");
    // The load did reach the limit, and slots moved between the pools.
    assert_eq!(stats.peak_open, u64::from(LIMIT), "{stats:?}");
    assert!(stats.opened > u64::from(LIMIT), "{stats:?}");
    assert_eq!((stats.timeouts, stats.waiting), (0, 0), "{stats:?}");
}

/// Guarantee 2: a checkout on a full server is served well before its deadline
/// by closing an idle connection of another pool of that server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_checkout_gets_room_from_another_pools_idle_connection() {
    const LIMIT: u32 = 2;
    let dir = tempfile::tempdir().unwrap();
    let target_a = sqlite_target(dir.path(), "a.db");
    let server = budget(&target_a, LIMIT);
    let a = pool(&server, target_a, PATIENT);
    let b = pool(&server, sqlite_target(dir.path(), "b.db"), PATIENT);

    let c1 = a.checkout(None, in_(PATIENT)).await.unwrap();
    let c2 = a.checkout(None, in_(PATIENT)).await.unwrap();
    a.give_back(c1, true);
    a.give_back(c2, true);
    assert_eq!(a.stats().idle, 2);
    assert_eq!(server.stats().open, u64::from(LIMIT));

    let started = Instant::now();
    let got = b.checkout(None, in_(Duration::from_secs(5))).await;
    let waited = started.elapsed();
    let conn = got.unwrap_or_else(|e| panic!("no room made for pool B: {e:?}"));
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    // One idle connection of A was closed for it, not both.
    assert_eq!(a.stats().idle, 1, "{:?}", a.stats());
    wait_until("A holds one connection", || a.stats().open == 1).await;
    let stats = server.stats();
    assert_eq!(stats.open, u64::from(LIMIT), "{stats:?}");
    assert_eq!(stats.peak_open, u64::from(LIMIT), "{stats:?}");
    assert_eq!(stats.timeouts, 0, "{stats:?}");
    b.give_back(conn, true);
}

/// Guarantee 3: when every slot is held by a connection in use, a checkout gives
/// up with `Timeout` at its deadline (not before, not much after), counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_times_out_at_its_deadline_when_every_slot_is_in_use() {
    const LIMIT: u32 = 2;
    let dir = tempfile::tempdir().unwrap();
    let target_a = sqlite_target(dir.path(), "a.db");
    let server = budget(&target_a, LIMIT);
    let a = pool(&server, target_a, PATIENT);
    let b = pool(&server, sqlite_target(dir.path(), "b.db"), PATIENT);
    let held = [
        a.checkout(None, in_(PATIENT)).await.unwrap(),
        a.checkout(None, in_(PATIENT)).await.unwrap(),
    ];

    let patience = Duration::from_millis(300);
    for (n, pool) in [(1, &b), (2, &a)] {
        let started = Instant::now();
        let got = tokio::time::timeout(PATIENT, pool.checkout(None, started + patience))
            .await
            .expect("the checkout ignored its deadline");
        let waited = started.elapsed();
        assert!(
            matches!(got, Err(CheckoutError::Timeout)),
            "expected a timeout, got {:?}",
            got.map(|_| "a connection")
        );
        assert!(waited >= patience, "gave up early, after {waited:?}");
        assert!(waited < Duration::from_secs(3), "gave up late, {waited:?}");
        let stats = server.stats();
        assert_eq!(stats.timeouts, n, "{stats:?}");
        assert_eq!(stats.waiting, 0, "{stats:?}");
        // Connections in use were not closed to make room.
        assert_eq!((stats.open, stats.in_use), (2, 2), "{stats:?}");
    }

    // It was only the lack of a slot: one given back serves the next checkout.
    let [c1, c2] = held;
    a.give_back(c1, true);
    let conn = b.checkout(None, in_(PATIENT)).await.unwrap();
    b.give_back(conn, true);
    a.give_back(c2, true);
    assert_eq!(server.stats().timeouts, 2);
}

/// Guarantee 4: connections idle past the timeout are closed and their slots
/// given back; a connection idle for less is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_after_the_idle_timeout() {
    let idle_timeout = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let target = sqlite_target(dir.path(), "a.db");
    let server = budget(&target, 4);
    let a = pool(&server, target, idle_timeout);
    let c1 = a.checkout(None, in_(PATIENT)).await.unwrap();
    let c2 = a.checkout(None, in_(PATIENT)).await.unwrap();
    a.give_back(c1, true);
    assert_eq!(a.close_idle_expired(), 0, "closed a fresh idle connection");
    wait_until(
        "the first connection has been idle past the timeout",
        || {
            a.idle()
                .first()
                .is_some_and(|c| c.idle_since.elapsed() > idle_timeout)
        },
    )
    .await;
    a.give_back(c2, true);
    assert_eq!(server.stats().open, 2);

    assert_eq!(a.close_idle_expired(), 1);
    assert_eq!(a.stats().idle, 1, "the fresh idle connection is kept");
    wait_until("the expired connection's slot is back", || {
        server.stats().open == 1
    })
    .await;
    assert_eq!(a.stats().open, 1);

    let mut closed = 0;
    wait_until("the second connection expires too", || {
        closed += a.close_idle_expired();
        closed == 1
    })
    .await;
    wait_until("every slot is back", || {
        server.stats().open == 0 && a.stats().open == 0
    })
    .await;
    let stats = server.stats();
    assert_eq!(
        (stats.opened, stats.closed, stats.idle),
        (2, 2, 0),
        "{stats:?}"
    );

    // The pool still works: the next checkout opens a new connection.
    let conn = a.checkout(None, in_(PATIENT)).await.unwrap();
    assert_eq!(server.stats().opened, 3);
    a.give_back(conn, true);
}

/// Guarantee 5: a connection whose query was cut short (the request's future
/// dropped mid-query) is closed, never handed to the next checkout; one whose
/// query finished is reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_short_mid_query_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let target = sqlite_target(dir.path(), "a.db");
    let server = budget(&target, 2);
    let a = pool(&server, target, PATIENT);

    // A query that finishes: the connection goes back to the idle list.
    let db = tenant_conn(&a, None).await;
    assert_eq!(int(&db, "SELECT 7").await, 7);
    drop(db);
    assert_eq!(a.stats().idle, 1);
    let db = tenant_conn(&a, None).await;
    assert_eq!(server.stats().opened, 1, "the idle connection is reused");

    // A query cut short.
    let long = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c \
                WHERE n < 10000000) SELECT count(*) FROM c";
    let cut = tokio::time::timeout(
        Duration::from_millis(20),
        db.query_one_raw(Statement::from_string(DbBackend::Sqlite, long)),
    )
    .await;
    assert!(cut.is_err(), "the long query finished within 20 ms");
    drop(db);
    let stats = a.stats();
    assert_eq!((stats.idle, stats.in_use), (0, 0), "{stats:?}");
    wait_until("the cut-short connection is closed", || {
        server.stats().open == 0
    })
    .await;
    assert_eq!(server.stats().closed, 1);

    // The next checkout gets a fresh connection, which works.
    let db = tenant_conn(&a, None).await;
    assert_eq!(
        server.stats().opened,
        2,
        "the cut-short connection was reused"
    );
    assert_eq!(int(&db, "SELECT 8").await, 8);
}

/// Guarantee 6: a transaction dropped without commit is rolled back, and its
/// connection is closed rather than returned to the idle list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_is_rolled_back_and_its_connection_closed() {
    let dir = tempfile::tempdir().unwrap();
    let target = sqlite_target(dir.path(), "a.db");
    let server = budget(&target, 2);
    let a = pool(&server, target, PATIENT);

    let db = tenant_conn(&a, None).await;
    db.execute_unprepared("CREATE TABLE t(x INTEGER)")
        .await
        .unwrap();
    let txn = db.begin().await.unwrap();
    txn.execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    assert_eq!(int(&txn, "SELECT count(*) FROM t").await, 1);
    drop(txn);
    drop(db);
    let stats = a.stats();
    assert_eq!((stats.idle, stats.in_use), (0, 0), "{stats:?}");
    wait_until("the connection is closed", || server.stats().open == 0).await;

    let db = tenant_conn(&a, None).await;
    assert_eq!(server.stats().opened, 2, "the connection was reused");
    assert_eq!(
        int(&db, "SELECT count(*) FROM t").await,
        0,
        "not rolled back"
    );
    // Nothing holds the file's write lock either.
    let txn = crate::db::begin_write(&db).await.unwrap();
    txn.execute_unprepared("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(ints(&db, "SELECT x FROM t").await, vec![2]);
}

/// Guarantee 7: a transaction begun inside a transaction is a savepoint: rolled
/// back, it undoes only its own writes; the connection ends clean and reusable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_transactions_are_savepoints() {
    let dir = tempfile::tempdir().unwrap();
    let target = sqlite_target(dir.path(), "a.db");
    let server = budget(&target, 2);
    let a = pool(&server, target, PATIENT);
    let db = tenant_conn(&a, None).await;
    db.execute_unprepared("CREATE TABLE t(x INTEGER)")
        .await
        .unwrap();

    let outer = db.begin().await.unwrap();
    outer
        .execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let inner = outer.begin().await.unwrap();
    inner
        .execute_unprepared("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    assert_eq!(ints(&inner, "SELECT x FROM t ORDER BY x").await, vec![1, 2]);
    inner.rollback().await.unwrap();
    assert_eq!(ints(&outer, "SELECT x FROM t ORDER BY x").await, vec![1]);
    // A savepoint in a write transaction, begun the way handlers begin them.
    let inner = crate::db::begin_write(&outer).await.unwrap();
    inner
        .execute_unprepared("INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    inner.commit().await.unwrap();
    outer
        .execute_unprepared("INSERT INTO t VALUES (4)")
        .await
        .unwrap();
    outer.commit().await.unwrap();
    drop(db);

    // Committed, and the connection went back to the pool for reuse.
    assert_eq!(a.stats().idle, 1);
    let db = tenant_conn(&a, None).await;
    assert_eq!(server.stats().opened, 1);
    assert_eq!(ints(&db, "SELECT x FROM t ORDER BY x").await, vec![1, 3, 4]);
}

/// Guarantee 8: `BEGIN IMMEDIATE` through `begin_with_options`: a second write
/// transaction on the same file queues on the busy timeout until the first
/// commits, then reads the first's row and writes; neither fails. (With a
/// deferred begin the second would read a snapshot the first makes stale and
/// fail on its write.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_transactions_on_one_file_queue_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let target = sqlite_target(dir.path(), "a.db");
    let server = budget(&target, 2);
    let a = pool(&server, target, PATIENT);
    let setup = tenant_conn(&a, None).await;
    setup
        .execute_unprepared("CREATE TABLE t(x INTEGER)")
        .await
        .unwrap();
    drop(setup);
    let immediate = || TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    let first = tenant_conn(&a, None).await;
    let second = tenant_conn(&a, None).await;

    let (holding_tx, holding) = tokio::sync::oneshot::channel::<()>();
    let (commit_tx, commit) = tokio::sync::oneshot::channel::<()>();
    let one = tokio::spawn(async move {
        let txn = first.begin_with_options(immediate()).await?;
        let seen = int(&txn, "SELECT count(*) FROM t").await;
        txn.execute_unprepared("INSERT INTO t VALUES (1)").await?;
        holding_tx.send(()).unwrap();
        commit.await.unwrap();
        txn.commit().await?;
        Ok::<i64, DbErr>(seen)
    });
    holding.await.unwrap();
    let (read_tx, mut read) = tokio::sync::oneshot::channel::<()>();
    let two = tokio::spawn(async move {
        let txn = second.begin_with_options(immediate()).await?;
        let seen = int(&txn, "SELECT count(*) FROM t").await;
        let _ = read_tx.send(());
        txn.execute_unprepared("INSERT INTO t VALUES (2)").await?;
        txn.commit().await?;
        Ok::<i64, DbErr>(seen)
    });
    // The second must not get as far as reading while the first holds the
    // write lock. Give it the chance (bounded), then let the first commit.
    let read_early = tokio::time::timeout(Duration::from_millis(300), &mut read)
        .await
        .is_ok();
    commit_tx.send(()).unwrap();
    let seen_one = one.await.unwrap().unwrap();
    let seen_two = two.await.unwrap().unwrap();
    assert!(
        !read_early,
        "the second transaction began while the first wrote"
    );
    assert_eq!((seen_one, seen_two), (0, 1), "not serialised");
    let db = tenant_conn(&a, None).await;
    assert_eq!(ints(&db, "SELECT x FROM t ORDER BY x").await, vec![1, 2]);
}

/// The issue's "fair queue (first come, first served per server)": a checkout
/// queued on a full server is not overtaken indefinitely by later checkouts of
/// a busy pool that keeps giving back and taking its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_does_not_starve_a_checkout_queued_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let target_a = sqlite_target(dir.path(), "a.db");
    let server = budget(&target_a, 1);
    let a = pool(&server, target_a, PATIENT);
    let b = pool(&server, sqlite_target(dir.path(), "b.db"), PATIENT);

    let held = a.checkout(None, in_(PATIENT)).await.unwrap();
    let queued = {
        let b = b.clone();
        tokio::spawn(async move {
            let got = b.checkout(None, in_(Duration::from_secs(2))).await;
            got.map(|conn| b.give_back(conn, true))
        })
    };
    wait_until("B's checkout waits for the server", || {
        server.stats().waiting == 1
    })
    .await;

    // Pool A stays busy: four requests at a time, each taking the connection
    // and giving it back, for longer than B's deadline unless B gets served.
    let stop = Arc::new(AtomicBool::new(false));
    let mut hot = Vec::new();
    for _ in 0..4 {
        let (a, stop) = (a.clone(), stop.clone());
        hot.push(tokio::spawn(async move {
            let until = in_(Duration::from_secs(4));
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                if let Ok(mut conn) = a.checkout(None, in_(PATIENT)).await {
                    conn.raw.execute_simple("SELECT 1").await.unwrap();
                    a.give_back(conn, true);
                }
            }
        }));
    }
    a.give_back(held, true);
    let outcome = queued.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for task in hot {
        task.await.unwrap();
    }
    assert!(
        outcome.is_ok(),
        "B, queued first, timed out while A's later checkouts were served: {:?}",
        server.stats()
    );
}

/// The same, step by step: with the server full, pool B (no connection) queues
/// first, then a second checkout of pool A (its connection in use) waits; when
/// A's connection is given back, B is served first: a checkout whose pool has no
/// connection is never passed over for a busy pool's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_of_the_servers_queue_is_served_first() {
    let dir = tempfile::tempdir().unwrap();
    let target_a = sqlite_target(dir.path(), "a.db");
    let server = budget(&target_a, 1);
    let a = pool(&server, target_a, PATIENT);
    let b = pool(&server, sqlite_target(dir.path(), "b.db"), PATIENT);
    let order = Arc::new(Mutex::new(Vec::new()));
    let checkout = |pool: &Arc<ConnPool>, name: &'static str| {
        let (pool, order) = (pool.clone(), order.clone());
        tokio::spawn(async move {
            let conn = pool.checkout(None, in_(PATIENT)).await.unwrap();
            order.lock().unwrap().push(name);
            pool.give_back(conn, true);
        })
    };

    let held = a.checkout(None, in_(PATIENT)).await.unwrap();
    let first = checkout(&b, "B, queued first");
    wait_until("B waits", || server.stats().waiting == 1).await;
    let second = checkout(&a, "A, queued second");
    wait_until("A waits too", || server.stats().waiting == 2).await;
    a.give_back(held, true);
    first.await.unwrap();
    second.await.unwrap();
    let order = order.lock().unwrap().clone();
    assert_eq!(order, ["B, queued first", "A, queued second"]);
}

/// A checkout of a busy pool on a full server waits for its own pool's connection
/// rather than taking a slot: meanwhile another pool's connection given back is
/// kept (not closed to make room), and no connection is opened. Without this,
/// 100 database tenants on a full budget closed and opened a connection on every
/// collision of two requests for one tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pools_checkout_reuses_its_own_connection_instead_of_closing_anothers() {
    let dir = tempfile::tempdir().unwrap();
    let target_a = sqlite_target(dir.path(), "a.db");
    // No connection turns cold during the test: B's stays hot.
    let server = ServerBudget::with_timing(&target_a, Some(2), None, CONNECT, GROW_AFTER, PATIENT);
    let a = pool(&server, target_a, PATIENT);
    let b = pool(&server, sqlite_target(dir.path(), "b.db"), PATIENT);
    let held_a = a.checkout(None, in_(PATIENT)).await.unwrap();
    let held_b = b.checkout(None, in_(PATIENT)).await.unwrap();

    let second_a = {
        let a = a.clone();
        tokio::spawn(async move {
            let conn = a.checkout(None, in_(PATIENT)).await;
            conn.map(|conn| a.give_back(conn, true))
        })
    };
    wait_until("A's second checkout waits", || server.stats().waiting == 1).await;
    b.give_back(held_b, true);
    assert_eq!(
        b.stats().idle,
        1,
        "B's connection was closed for a checkout that could wait for its own pool's: {:?}",
        server.stats()
    );
    a.give_back(held_a, true);
    second_a.await.unwrap().unwrap();
    let stats = server.stats();
    assert_eq!((stats.opened, stats.open), (2, 2), "{stats:?}");
    assert_eq!((a.stats().idle, b.stats().idle), (1, 1));
}

/// Even with a slot free, a busy pool's checkout first waits for one of its own
/// connections: a slot freed by an idle connection closing would otherwise go to
/// a new connection that then sits idle until it closes in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_reuses_its_own_connection_before_opening_into_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let target = sqlite_target(dir.path(), "a.db");
    // It never grows during the test.
    let server = ServerBudget::with_timing(&target, Some(3), None, CONNECT, PATIENT, PATIENT);
    let a = pool(&server, target, PATIENT);
    let held = a.checkout(None, in_(PATIENT)).await.unwrap();
    let second = {
        let a = a.clone();
        tokio::spawn(async move {
            a.checkout(None, in_(PATIENT))
                .await
                .map(|c| a.give_back(c, true))
        })
    };
    wait_until("the second checkout waits", || server.stats().waiting == 1).await;
    a.give_back(held, true);
    second.await.unwrap().unwrap();
    let stats = server.stats();
    assert_eq!((stats.opened, stats.open), (1, 1), "{stats:?}");

    // And past its wait, it does grow into the free slot.
    let server = ServerBudget::with_timing(
        &sqlite_target(dir.path(), "b.db"),
        Some(3),
        None,
        CONNECT,
        Duration::from_millis(50),
        PATIENT,
    );
    let b = pool(&server, sqlite_target(dir.path(), "b.db"), PATIENT);
    let held = b.checkout(None, in_(PATIENT)).await.unwrap();
    let grown = b.checkout(None, in_(PATIENT)).await.unwrap();
    assert_eq!(server.stats().opened, 2);
    b.give_back(grown, true);
    b.give_back(held, true);
}

/// A busy pool on a full server still grows, into connections that other pools
/// have stopped using: a connection idle past the cold threshold is closed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_grows_into_a_connection_another_pool_stopped_using() {
    let cold_after = Duration::from_millis(200);
    let dir = tempfile::tempdir().unwrap();
    let target_a = sqlite_target(dir.path(), "a.db");
    let server =
        ServerBudget::with_timing(&target_a, Some(2), None, CONNECT, GROW_AFTER, cold_after);
    let a = pool(&server, target_a, PATIENT);
    let b = pool(&server, sqlite_target(dir.path(), "b.db"), PATIENT);
    let held_a = a.checkout(None, in_(PATIENT)).await.unwrap();
    let b_conn = b.checkout(None, in_(PATIENT)).await.unwrap();
    b.give_back(b_conn, true);

    let started = Instant::now();
    let second_a = a.checkout(None, in_(PATIENT)).await.unwrap();
    assert!(
        started.elapsed() >= cold_after / 2,
        "B's connection was taken while still warm"
    );
    wait_until("B's connection is closed", || b.stats().open == 0).await;
    assert_eq!(a.stats().open, 2, "{:?}", a.stats());
    assert_eq!(server.stats().timeouts, 0);
    a.give_back(second_a, true);
    a.give_back(held_a, true);
}

/// PostgreSQL: one real connection (a budget of one slot) serves two schemas in
/// turn, each checkout seeing only its own schema's rows, also after an error
/// inside a transaction on the other schema. The connection stays on an empty
/// search path: a table a statement does not qualify (unquoted) is found nowhere,
/// not even in `public`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_connection_switches_schemas_without_leaking_rows() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    pg.setup(
        "CREATE SCHEMA a; CREATE SCHEMA b; \
         CREATE TABLE a.t(x int); CREATE TABLE b.t(x int); CREATE TABLE public.t(x int); \
         INSERT INTO b.t VALUES (2); INSERT INTO public.t VALUES (3)",
    )
    .await;

    let target = Target::parse(&pg.url).unwrap();
    let server = budget(&target, 1);
    let p = pool(&server, target, PATIENT);
    let pid = "SELECT pg_backend_pid()::int8";

    let db = tenant_conn(&p, Some("a")).await;
    let first_pid = int(&db, pid).await;
    db.execute_unprepared(r#"INSERT INTO "t" VALUES (1)"#)
        .await
        .unwrap();
    assert_eq!(ints(&db, r#"SELECT x FROM "t""#).await, vec![1]);
    let unqualified = db.query_all_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT x FROM t",
    ));
    let err = unqualified
        .await
        .expect_err("an unquoted table reached a schema");
    assert!(err.to_string().contains("does not exist"), "{err}");
    drop(db);

    let db = tenant_conn(&p, Some("b")).await;
    assert_eq!(int(&db, pid).await, first_pid, "not the same connection");
    assert_eq!(ints(&db, r#"SELECT x FROM "t""#).await, vec![2]);
    drop(db);

    // A database-mode tenant of the same database: its default search path.
    let db = tenant_conn(&p, None).await;
    assert_eq!(int(&db, pid).await, first_pid, "not the same connection");
    assert_eq!(ints(&db, r#"SELECT x FROM "t""#).await, vec![3]);
    drop(db);

    // An error inside a transaction on A, rolled back.
    let db = tenant_conn(&p, Some("a")).await;
    let txn = db.begin().await.unwrap();
    txn.execute_unprepared(r#"INSERT INTO "t" VALUES (10)"#)
        .await
        .unwrap();
    assert!(txn.execute_unprepared("SELECT 1 / 0").await.is_err());
    txn.rollback().await.unwrap();
    drop(db);

    let db = tenant_conn(&p, Some("b")).await;
    assert_eq!(int(&db, pid).await, first_pid, "not the same connection");
    assert_eq!(ints(&db, r#"SELECT x FROM "t""#).await, vec![2]);
    drop(db);

    // An error inside a transaction on A, dropped without a rollback.
    let db = tenant_conn(&p, Some("a")).await;
    let txn = db.begin().await.unwrap();
    txn.execute_unprepared(r#"INSERT INTO "t" VALUES (11)"#)
        .await
        .unwrap();
    assert!(txn.execute_unprepared("SELECT 1 / 0").await.is_err());
    drop(txn);
    drop(db);

    let db = tenant_conn(&p, Some("b")).await;
    assert_eq!(ints(&db, r#"SELECT x FROM "t""#).await, vec![2]);
    drop(db);
    let db = tenant_conn(&p, Some("a")).await;
    assert_eq!(ints(&db, r#"SELECT x FROM "t""#).await, vec![1]);
    drop(db);
    let stats = server.stats();
    assert!(stats.peak_open <= 1, "{stats:?}");

    p.close().await;
    drop(p);
    pg.drop().await;
}

/// PostgreSQL: a connection serving two schema tenants in turn keeps each one's
/// statement prepared (its text names the schema), never re-pointing a search
/// path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_connection_keeps_each_tenants_statements() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    pg.setup(
        "CREATE SCHEMA a; CREATE SCHEMA b; CREATE TABLE a.t(x int); CREATE TABLE b.t(x int); \
         INSERT INTO a.t VALUES (1); INSERT INTO b.t VALUES (2)",
    )
    .await;
    let target = Target::parse(&pg.url).unwrap();
    let server = budget(&target, 1);
    let p = pool(&server, target, PATIENT);
    let select = r#"SELECT x FROM "t""#;

    for _ in 0..2 {
        for (schema, x) in [("a", 1), ("b", 2)] {
            let db = tenant_conn(&p, Some(schema)).await;
            assert_eq!(ints(&db, select).await, vec![x]);
        }
    }
    let check = tenant_conn(&p, Some("a")).await;
    let prepared = ints(
        &check,
        "SELECT count(*)::int4 FROM pg_prepared_statements \
         WHERE statement LIKE 'SELECT x FROM %'",
    )
    .await;
    assert_eq!(prepared, vec![2], "one prepared statement per tenant");
    let settings = check
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_setting('search_path') AS path, \
             current_setting('plan_cache_mode') AS mode",
        ))
        .await
        .unwrap()
        .unwrap();
    let path: String = settings.try_get("", "path").unwrap();
    let mode: String = settings.try_get("", "mode").unwrap();
    assert_eq!(
        (path.as_str(), mode.as_str()),
        ("\"\"", "force_generic_plan")
    );
    drop(check);
    assert_eq!(server.stats().peak_open, 1);

    p.close().await;
    drop(p);
    pg.drop().await;
}

const PID: &str = "SELECT pg_backend_pid()::int8";

/// Schema tenants with no tables of their own: their checkouts only ask for the
/// backend's pid.
fn schemas(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i}")).collect()
}

/// A pool on `pg` with `open` connections open and idle, whose schema tenants
/// wait `home_wait` for their home.
async fn pg_pool_with(pg: &PgTestDb, open: usize, home_wait: Duration) -> Arc<ConnPool> {
    let target = Target::parse(&pg.url).unwrap();
    let server = budget(&target, open as u32);
    let p = ConnPool::with_home_wait(server, target, PATIENT, CONNECT, home_wait);
    let mut held = Vec::new();
    for _ in 0..open {
        held.push(p.checkout(None, in_(PATIENT)).await.unwrap());
    }
    for conn in held {
        p.give_back(conn, true);
    }
    assert_eq!(p.stats().idle as usize, open);
    p
}

/// The backend each of `tenants` lands on when every connection is idle.
async fn homes_of(p: &Arc<ConnPool>, tenants: &[String]) -> Vec<i64> {
    let mut pids = Vec::new();
    for t in tenants {
        let db = tenant_conn(p, Some(t)).await;
        pids.push(int(&db, PID).await);
    }
    pids
}

/// Two of `tenants` that share a home, and that home's backend.
fn sharing_a_home(tenants: &[String], homes: &[i64]) -> (String, String, i64) {
    for i in 0..tenants.len() {
        for j in i + 1..tenants.len() {
            if homes[i] == homes[j] {
                return (tenants[i].clone(), tenants[j].clone(), homes[i]);
            }
        }
    }
    panic!("no two tenants share a home: {homes:?}");
}

/// PostgreSQL: each schema tenant goes back to the same connection (its home)
/// whenever it is idle, whichever connection was used last, and the tenants'
/// homes spread over the connections, so that each backend serves a stable share
/// of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_schema_tenants_go_back_to_their_home_connections() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let p = pg_pool_with(&pg, 3, HOME_WAIT).await;
    let tenants = schemas(12);
    let first = homes_of(&p, &tenants).await;
    let mut reversed = tenants.clone();
    reversed.reverse();
    let mut again = homes_of(&p, &reversed).await;
    again.reverse();
    assert_eq!(first, again, "a tenant left its home");
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 1,
        "every tenant on one connection: {first:?}"
    );

    // Its home given back last or first makes no difference.
    let (x, y, home) = sharing_a_home(&tenants, &first);
    let other = tenants[first.iter().position(|&pid| pid != home).unwrap()].clone();
    let on_other = tenant_conn(&p, Some(&other)).await;
    let on_y = tenant_conn(&p, Some(&y)).await;
    drop(on_y);
    drop(on_other);
    checkout_on(&p, &x, home, "X did not go back to its home").await;

    p.close().await;
    drop(p);
    pg.drop().await;
}

/// PostgreSQL: a checkout whose home is in use by another tenant waits for it,
/// though other connections are idle, and gets it as soon as it is given back; a
/// tenant whose home is busy with its own request takes another connection at
/// once (a hot tenant does not queue behind itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_checkout_waits_for_its_home_but_not_behind_its_own_tenant() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    // Waits this long would make the test time out: it never relies on one ending.
    let p = pg_pool_with(&pg, 2, PATIENT).await;
    let tenants = schemas(6);
    let (x, y, home) = sharing_a_home(&tenants, &homes_of(&p, &tenants).await);

    let on_y = checkout_on(&p, &y, home, "Y not on its home").await;
    let waiting = tokio::spawn({
        let (p, x) = (p.clone(), x.clone());
        async move { int(&tenant_conn(&p, Some(&x)).await, PID).await }
    });
    waiting_for_a_home(&p).await;
    assert_eq!(p.stats().idle, 1, "X took the idle connection");
    drop(on_y);
    assert_eq!(waiting.await.unwrap(), home, "X was not handed its home");

    // X's own request holds its home: X's next checkout takes the other one.
    let on_x = checkout_on(&p, &x, home, "X not on its home").await;
    let second = tokio::time::timeout(PATIENT / 3, tenant_conn(&p, Some(&x)))
        .await
        .expect("a hot tenant queued behind its own request");
    assert_ne!(int(&second, PID).await, home);
    drop(second);
    drop(on_x);
    let stats = p.stats();
    assert_eq!((stats.open, stats.in_use, stats.idle), (2, 0, 2));
    // Counted: the six first checkouts, Y's, X's handed over and X's first on its
    // home; X's second elsewhere.
    let server = p.server().stats();
    assert_eq!((server.home_checkouts, server.away_checkouts), (9, 1));

    p.close().await;
    drop(p);
    pg.drop().await;
}

/// PostgreSQL: a checkout waits for its home only a moment, then takes another
/// idle connection; one cancelled while it waits loses nothing: the home, given
/// back, is idle again, and the counts agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_home_wait_ends_or_is_cancelled_without_losing_the_connection() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let p = pg_pool_with(&pg, 2, Duration::from_millis(20)).await;
    let tenants = schemas(6);
    let (x, y, home) = sharing_a_home(&tenants, &homes_of(&p, &tenants).await);

    let on_y = checkout_on(&p, &y, home, "Y not on its home").await;
    let elsewhere = tenant_conn(&p, Some(&x)).await;
    assert_ne!(int(&elsewhere, PID).await, home, "X waited on");
    drop(elsewhere);
    drop(on_y);

    let p = {
        drop(p);
        pg_pool_with(&pg, 2, PATIENT).await
    };
    let on_y = checkout_on(&p, &y, home_of(&p, &y).await, "Y not on its home").await;
    let cancelled = tokio::spawn({
        let (p, x) = (p.clone(), x.clone());
        async move { tenant_conn(&p, Some(&x)).await }
    });
    waiting_for_a_home(&p).await;
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    drop(on_y);
    let stats = p.stats();
    assert_eq!((stats.open, stats.in_use, stats.idle), (2, 0, 2));
    let _ = tenant_conn(&p, Some(&x)).await;

    p.close().await;
    drop(p);
    pg.drop().await;
}

/// Until a checkout of `p` waits for its home.
async fn waiting_for_a_home(p: &Arc<ConnPool>) {
    wait_until("a checkout waits for its home", || {
        p.counts.homes().values().any(|h| !h.waiters.is_empty())
    })
    .await;
}

/// The backend `schema`'s tenant lands on with every connection idle.
async fn home_of(p: &Arc<ConnPool>, schema: &str) -> i64 {
    homes_of(p, &[schema.to_string()]).await[0]
}

/// A connection for the tenant of `schema`, asserting it is the backend `pid`.
async fn checkout_on(pool: &Arc<ConnPool>, schema: &str, pid: i64, failure: &str) -> TenantConn {
    let db = tenant_conn(pool, Some(schema)).await;
    assert_eq!(int(&db, PID).await, pid, "{failure}");
    db
}

/// Until a statement containing `marker` waits for a lock on `pg`'s database (at
/// most 30 s).
async fn until_blocked(pg: &PgTestDb, marker: &str, running: &tokio::task::JoinHandle<()>) {
    let deadline = Instant::now() + PATIENT;
    while pg.waiting_on_lock(marker).await == 0 {
        assert!(
            !running.is_finished(),
            "{marker} ended before it waited for its lock"
        );
        assert!(
            Instant::now() < deadline,
            "{marker} never waited for its lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts `sql` (which must contain `marker`) on `db` and cancels it, as a client
/// going away does, while PostgreSQL holds it waiting for a lock the test holds:
/// the statement cannot finish first, and the drain cannot end before the test
/// lets go of the lock.
async fn cut_short_while_blocked(
    pg: &PgTestDb,
    db: impl ConnectionTrait + Send + 'static,
    sql: String,
    marker: &str,
) {
    let running = tokio::spawn(async move {
        let _ = db
            .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await;
        unreachable!("the statement finished before it was cut short");
    });
    until_blocked(pg, marker, &running).await;
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
}

/// Until no connection of `server` is in use (a drain under way counts): then
/// its counts say how the drain ended.
async fn settled(server: &Arc<ServerBudget>) -> ServerStats {
    wait_until("no connection is in use", || server.stats().in_use == 0).await;
    server.stats()
}

/// A pool of one connection on `pg` whose drains may take `drain_timeout`.
fn pg_pool_draining(pg: &PgTestDb, drain_timeout: Duration) -> (Arc<ServerBudget>, Arc<ConnPool>) {
    let target = Target::parse(&pg.url).unwrap();
    let server = budget(&target, 1);
    let p = ConnPool::build(
        server.clone(),
        target,
        PATIENT,
        CONNECT,
        HOME_WAIT,
        drain_timeout,
    );
    (server, p)
}

/// PostgreSQL: a read cut short outside any transaction (the client went away)
/// does not cost the connection. It is drained, counted in use until the server
/// has finished the statement, and then serves the next tenant, who sees only its
/// own rows on it. One cut short while it was being prepared would leave a
/// statement on the server that the driver does not know of: that one is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_read_cut_short_is_drained_and_its_connection_kept() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    pg.setup(
        "CREATE SCHEMA a; CREATE SCHEMA b; CREATE TABLE a.t(x int); CREATE TABLE b.t(x int); \
         INSERT INTO a.t VALUES (1); INSERT INTO b.t VALUES (2)",
    )
    .await;
    let (server, p) = pg_pool_draining(&pg, PATIENT);

    let db = tenant_conn(&p, Some("a")).await;
    let pid = int(&db, PID).await;
    let marker = "drain_me_1";
    let sql = format!(r#"SELECT x AS {marker} FROM "t""#);
    // Prepared once: cut short, it is in the middle of running, not of preparing.
    assert_eq!(ints(&db, &sql).await, vec![1]);
    let lock = pg.lock("a.t").await;
    cut_short_while_blocked(&pg, db, sql, marker).await;
    // The statement still waits on the server: the connection is not back yet.
    assert_eq!(p.stats().in_use, 1, "{:?}", p.stats());
    lock.commit().await.unwrap();
    let stats = settled(&server).await;
    assert_eq!(
        (stats.opened, stats.closed, stats.drained, stats.idle),
        (1, 0, 1, 1),
        "{stats:?}"
    );

    let db = tenant_conn(&p, Some("b")).await;
    assert_eq!(int(&db, PID).await, pid, "not the drained connection");
    assert_eq!(ints(&db, r#"SELECT x FROM "t""#).await, vec![2]);
    // Not inside a transaction: now() moves on between two statements.
    let t1 = int(&db, "SELECT (extract(epoch FROM now()) * 1e6)::int8").await;
    let t2 = int(
        &db,
        "SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::int8",
    )
    .await;
    let t3 = int(&db, "SELECT (extract(epoch FROM now()) * 1e6)::int8").await;
    assert!(t1 < t2 && t2 <= t3, "a transaction is open: {t1} {t2} {t3}");
    drop(db);

    // Cut short while being prepared (parsing it waits for the lock too).
    let db = tenant_conn(&p, Some("a")).await;
    let lock = pg.lock("a.t").await;
    let marker = "never_prepared_2";
    let sql = format!(r#"SELECT x AS {marker} FROM "t""#);
    cut_short_while_blocked(&pg, db, sql, marker).await;
    lock.commit().await.unwrap();
    let stats = settled(&server).await;
    assert_eq!(
        (stats.opened, stats.drained, stats.idle),
        (1, 1, 0),
        "{stats:?}"
    );
    wait_until("the connection with a stray statement is closed", || {
        server.stats().closed == 1 && server.stats().open == 0
    })
    .await;
    let db = tenant_conn(&p, Some("a")).await;
    assert_ne!(int(&db, PID).await, pid, "the connection was kept");
    assert_eq!(
        int(&db, "SELECT count(*) FROM pg_prepared_statements").await,
        2,
        "more than the two statements this connection ran"
    );
    drop(db);

    p.close().await;
    drop(p);
    pg.drop().await;
}

/// PostgreSQL: what cannot be drained safely is closed, as before: a statement
/// inside a transaction, an unprepared one (it may hold several statements), a
/// read still running after the drain's time, and a session left changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_what_cannot_be_drained_is_closed() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    pg.setup("CREATE SCHEMA a; CREATE TABLE a.t(x int); INSERT INTO a.t VALUES (1)")
        .await;
    let drain_timeout = Duration::from_millis(300);
    let (server, p) = pg_pool_draining(&pg, drain_timeout);
    let closed = |n: u64| {
        let server = server.clone();
        move || server.stats().closed == n && server.stats().open == 0
    };
    // Once the drain has ended: given back as not reusable, not kept. Its close
    // may still be under way (sqlx's close of a TLS connection waits until the
    // server sends something, so not before the test lets go of the lock).
    let given_up = |what: &'static str| {
        let server = server.clone();
        async move {
            let stats = settled(&server).await;
            assert_eq!(
                (stats.drained, stats.idle),
                (0, 0),
                "{what} kept: {stats:?}"
            );
        }
    };
    let marked = |marker: &str| format!(r#"SELECT x AS {marker} FROM "t""#);

    // Inside a transaction.
    let db = tenant_conn(&p, Some("a")).await;
    let txn = db.begin().await.unwrap();
    let lock = pg.lock("a.t").await;
    cut_short_while_blocked(&pg, txn, marked("in_txn_2"), "in_txn_2").await;
    drop(db);
    given_up("the connection in a transaction").await;
    lock.commit().await.unwrap();
    wait_until("the connection in a transaction is closed", closed(1)).await;

    // Unprepared.
    let db = tenant_conn(&p, Some("a")).await;
    let lock = pg.lock("a.t").await;
    let running = tokio::spawn({
        let (db, sql) = (db.clone(), marked("unprepared_3"));
        async move {
            let _ = db.execute_unprepared(&sql).await;
            unreachable!("the statement finished before it was cut short");
        }
    });
    until_blocked(&pg, "unprepared_3", &running).await;
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    drop(db);
    given_up("the unprepared statement's connection").await;
    lock.commit().await.unwrap();
    wait_until("the unprepared statement's connection is closed", closed(2)).await;

    // Longer than the drain's time.
    let db = tenant_conn(&p, Some("a")).await;
    let sql = marked("too_long_4");
    assert_eq!(ints(&db, &sql).await, vec![1]);
    let lock = pg.lock("a.t").await;
    let started = Instant::now();
    cut_short_while_blocked(&pg, db, sql, "too_long_4").await;
    given_up("the long statement's connection").await;
    assert!(
        started.elapsed() >= drain_timeout,
        "given up before the drain's time"
    );
    lock.commit().await.unwrap();
    wait_until("the long statement's connection is closed", closed(3)).await;

    // A session setting changed by the statement cut short: the search path a
    // schema tenant's connection relies on, and any other.
    let cases = [
        (
            "search_path",
            "a",
            "SET search_path TO ''",
            "set_search_path_5",
        ),
        (
            "statement_timeout",
            "5s",
            "RESET statement_timeout",
            "set_timeout_6",
        ),
    ];
    for (n, (setting, value, undo, marker)) in cases.into_iter().enumerate() {
        let db = tenant_conn(&p, Some("a")).await;
        let sql =
            format!(r#"SELECT x AS {marker}, set_config('{setting}', '{value}', false) FROM "t""#);
        // Prepared once, and the setting put back as it was.
        assert_eq!(ints(&db, &sql).await, vec![1]);
        db.execute_unprepared(undo).await.unwrap();
        let lock = pg.lock("a.t").await;
        cut_short_while_blocked(&pg, db, sql, marker).await;
        lock.commit().await.unwrap();
        given_up(marker).await;
        wait_until(
            "the changed session's connection is closed",
            closed(4 + n as u64),
        )
        .await;
    }

    let stats = server.stats();
    assert_eq!((stats.opened, stats.drained), (5, 0), "{stats:?}");
    // The next checkout opens a connection that works.
    let db = tenant_conn(&p, Some("a")).await;
    assert_eq!(ints(&db, r#"SELECT x FROM "t""#).await, vec![1]);
    drop(db);

    p.close().await;
    drop(p);
    pg.drop().await;
}

/// PostgreSQL: a transaction dropped without an end (a handler answering an error
/// from inside it) is rolled back, the request cannot use the connection after,
/// and the connection, drained of the rollback, serves the next tenant. A
/// savepoint dropped inside a transaction that is then rolled back leaves it clean
/// too; one whose transaction then cannot be committed leaves it in a
/// transaction: that one is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_dropped_transaction_is_rolled_back_and_its_connection_kept() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    pg.setup(
        "CREATE SCHEMA a; CREATE SCHEMA b; CREATE TABLE a.t(x int); CREATE TABLE b.t(x int); \
         INSERT INTO b.t VALUES (2)",
    )
    .await;
    let (server, p) = pg_pool_draining(&pg, PATIENT);

    let db = tenant_conn(&p, Some("a")).await;
    let pid = int(&db, PID).await;
    let txn = db.begin().await.unwrap();
    txn.execute_unprepared(r#"INSERT INTO "t" VALUES (1)"#)
        .await
        .unwrap();
    assert!(txn.execute_unprepared("SELECT 1 / 0").await.is_err());
    drop(txn);
    let after = db.execute_unprepared(r#"INSERT INTO "t" VALUES (3)"#).await;
    assert!(after.is_err(), "the request used the connection after");
    drop(db);
    let stats = settled(&server).await;
    assert_eq!(
        (stats.opened, stats.closed, stats.drained, stats.idle),
        (1, 0, 1, 1),
        "{stats:?}"
    );

    let db = tenant_conn(&p, Some("b")).await;
    assert_eq!(int(&db, PID).await, pid, "not the drained connection");
    assert_eq!(ints(&db, r#"SELECT x FROM "t""#).await, vec![2]);
    drop(db);
    let db = tenant_conn(&p, Some("a")).await;
    assert_eq!(ints(&db, r#"SELECT x FROM "t""#).await, Vec::<i64>::new());

    // A savepoint dropped; its transaction cannot be committed after.
    let outer = db.begin().await.unwrap();
    outer
        .execute_unprepared(r#"INSERT INTO "t" VALUES (4)"#)
        .await
        .unwrap();
    let inner = outer.begin().await.unwrap();
    drop(inner);
    assert!(
        outer.commit().await.is_err(),
        "committed after a dropped savepoint"
    );
    drop(db);
    let stats = settled(&server).await;
    assert_eq!((stats.drained, stats.idle), (1, 0), "{stats:?}");
    wait_until("the connection in a transaction is closed", || {
        server.stats().closed == 1 && server.stats().open == 0
    })
    .await;
    let db = tenant_conn(&p, Some("a")).await;
    assert_eq!(ints(&db, r#"SELECT x FROM "t""#).await, Vec::<i64>::new());
    let stats = server.stats();
    assert_eq!((stats.opened, stats.drained), (2, 1), "{stats:?}");

    // A savepoint dropped, its transaction rolled back (as the audit layer does
    // for a write answered with an error): nothing stays, the connection is kept.
    let pid = int(&db, PID).await;
    let outer = db.begin().await.unwrap();
    outer
        .execute_unprepared(r#"INSERT INTO "t" VALUES (5)"#)
        .await
        .unwrap();
    let inner = outer.begin().await.unwrap();
    inner
        .execute_unprepared(r#"INSERT INTO "t" VALUES (6)"#)
        .await
        .unwrap();
    drop(inner);
    outer.rollback().await.unwrap();
    drop(db);
    let stats = settled(&server).await;
    assert_eq!((stats.drained, stats.idle), (2, 1), "{stats:?}");
    let db = tenant_conn(&p, Some("a")).await;
    assert_eq!(int(&db, PID).await, pid, "not the drained connection");
    assert_eq!(ints(&db, r#"SELECT x FROM "t""#).await, Vec::<i64>::new());
    let stats = server.stats();
    assert_eq!((stats.opened, stats.closed), (2, 1), "{stats:?}");
    drop(db);

    p.close().await;
    drop(p);
    pg.drop().await;
}
