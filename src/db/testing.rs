//! What the connection layer's tests share: a PostgreSQL database of their own.

use sea_orm::ConnectionTrait;

/// A database of its own on the server in TEST_DATABASE_URL, dropped at the end.
pub(crate) struct PgTestDb {
    admin: sea_orm::DatabaseConnection,
    name: String,
    pub(crate) url: String,
}

impl PgTestDb {
    /// `None` (and a note) when TEST_DATABASE_URL is not set.
    pub(crate) async fn create() -> Option<Self> {
        let Ok(base) = std::env::var("TEST_DATABASE_URL") else {
            println!("TEST_DATABASE_URL is not set: skipping the PostgreSQL test");
            return None;
        };
        let name = format!(
            "dbtest_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let with_db = |db: &str| {
            let mut url = url::Url::parse(&base).unwrap();
            url.set_path(&format!("/{db}"));
            url.to_string()
        };
        let admin = crate::db::connect(with_db("postgres")).await.unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        let url = crate::db::prepare_url(&with_db(&name)).unwrap();
        Some(Self { admin, name, url })
    }

    pub(crate) async fn setup(&self, sql: &str) {
        let setup = crate::db::connect(self.url.clone()).await.unwrap();
        setup.execute_unprepared(sql).await.unwrap();
        setup.close().await.unwrap();
    }

    /// Statements on this database whose text contains `marker`, waiting now
    /// for a lock.
    pub(crate) async fn waiting_on_lock(&self, marker: &str) -> i64 {
        let row = self
            .admin
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                 AND wait_event_type = 'Lock' AND strpos(query, $2) > 0",
                [self.name.clone().into(), marker.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    /// A transaction of its own holding `table` locked against everything, until
    /// it ends.
    pub(crate) async fn lock(&self, table: &str) -> sea_orm::DatabaseTransaction {
        use sea_orm::TransactionTrait;
        let db = crate::db::connect(self.url.clone()).await.unwrap();
        let txn = db.begin().await.unwrap();
        // A test that left a backend behind fails here, not hangs.
        txn.execute_unprepared("SET LOCAL lock_timeout = '30s'")
            .await
            .unwrap();
        txn.execute_unprepared(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .await
            .unwrap();
        txn
    }

    pub(crate) async fn drop(self) {
        self.admin
            .execute_unprepared(&format!("DROP DATABASE \"{}\" WITH (FORCE)", self.name))
            .await
            .unwrap();
        self.admin.close().await.unwrap();
    }
}
