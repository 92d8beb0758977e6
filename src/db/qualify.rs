//! Schema-qualified SQL for schema-mode tenants: `FROM "products"` becomes
//! `FROM "tenant_acme"."products"` on the way to a shared connection.
//!
//! Why: the connections of a database shared by schema tenants serve one tenant
//! after another. Pointing `search_path` at each request's schema costs a round
//! trip, and PostgreSQL parses and plans a prepared statement again whenever the
//! search path it was planned under changes. A statement whose tables name their
//! schema needs neither: it is prepared once per connection and tenant, and its
//! text (the statement cache's key) tells tenants apart. Those connections keep an
//! empty `search_path`, so a table this scanner misses is found nowhere: the
//! statement fails, it never reaches another tenant's rows.
//!
//! This is a scanner, not a parser. It skips string literals (`'…'`, `E'…'`),
//! dollar quotes, comments and parameters, and qualifies a double-quoted name that
//! follows `FROM`, `JOIN`, `USING`, `INTO`, `UPDATE`, `TABLE` or `TRUNCATE` (after
//! an optional `ONLY`), and the further names of a `FROM`, `USING` or `TRUNCATE`
//! list, at statement level or in a subquery. It leaves alone names already
//! qualified, column references (`"products"."id"`), the `FROM` of `IS DISTINCT
//! FROM` and of function arguments (`EXTRACT(… FROM …)`), the names of `FOR
//! UPDATE OF`, and bare (unquoted) names: that is how catalog views are reached.
//! sea-query quotes every identifier it writes; hand-written SQL for tenant data
//! must quote its table names.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use super::quote_ident;

/// How many statements' places [`qualify`] remembers. A service sends the same
/// few hundred statement texts over and over; texts made on the fly (an `IN` list
/// of any length) must not grow the cache without end, nor push those out.
const PLACES_CAPACITY: usize = 2048;

/// Longer texts are scanned each time instead: a bulk insert of many rows, or SQL
/// with its values written in, would otherwise keep its whole text in memory.
const PLACES_MAX_TEXT: usize = 2048;

/// Statement texts and the byte offsets of the names to qualify in each, in two
/// generations of at most half the capacity each. A new text goes into the young
/// one; when that is full it becomes the old one and the old one is dropped. A
/// text found in the old generation moves back to the young one, so the texts in
/// use outlive any number of one-off texts (the cache used to be emptied whenever
/// it filled, the texts in use with it).
struct Places {
    young: HashMap<Box<str>, Arc<[usize]>>,
    old: HashMap<Box<str>, Arc<[usize]>>,
    capacity: usize,
}

impl Places {
    fn new(capacity: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            capacity,
        }
    }

    fn get(&mut self, sql: &str) -> Option<Arc<[usize]>> {
        if let Some(at) = self.young.get(sql) {
            return Some(at.clone());
        }
        let (sql, at) = self.old.remove_entry(sql)?;
        self.insert(sql, at.clone());
        Some(at)
    }

    fn insert(&mut self, sql: Box<str>, at: Arc<[usize]>) {
        if self.young.len() >= self.capacity.div_ceil(2) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(sql, at);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// Where each statement seen takes the schema, which depends on the statement's
/// text alone, not on the tenant.
static PLACES: LazyLock<Mutex<Places>> = LazyLock::new(|| Mutex::new(Places::new(PLACES_CAPACITY)));

/// What a token is, as far as qualifying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A keyword or bare name.
    Word,
    /// A double-quoted name.
    Quoted,
    Open,
    Close,
    Comma,
    Dot,
    /// Anything else that matters to no rule (literals, numbers, operators,
    /// parameters).
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

/// The tokens of `sql` that are not white space or comments.
fn tokens(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 6);
    let mut i = 0;
    let word_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Block comments nest in PostgreSQL.
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'\'' => {
                // `E'…'` (an escape string) takes backslash escapes.
                let escapes = start > 0
                    && matches!(b[start - 1], b'E' | b'e')
                    && (start < 2 || !word_char(b[start - 2]));
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'\\' if escapes => i += 2,
                        b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
                        b'\'' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                Kind::Other
            }
            b'"' => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'"' {
                        if b.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                Kind::Quoted
            }
            b'$' => {
                i += 1;
                if b.get(i).is_some_and(|d| d.is_ascii_digit()) {
                    // A parameter: $1.
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    // A dollar quote: $tag$ … $tag$ (the tag may be empty).
                    let tag_start = start;
                    while i < b.len() && b[i] != b'$' && word_char(b[i]) {
                        i += 1;
                    }
                    if b.get(i) == Some(&b'$') {
                        i += 1;
                        let tag = &sql[tag_start..i];
                        i = match sql[i..].find(tag) {
                            Some(at) => i + at + tag.len(),
                            None => b.len(),
                        };
                    }
                }
                Kind::Other
            }
            b'(' => {
                i += 1;
                Kind::Open
            }
            b')' => {
                i += 1;
                Kind::Close
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            b'.' if !b.get(i + 1).is_some_and(|d| d.is_ascii_digit()) => {
                i += 1;
                Kind::Dot
            }
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                Kind::Other
            }
            c if word_char(c) => {
                while i < b.len() && word_char(b[i]) {
                    i += 1;
                }
                Kind::Word
            }
            _ => {
                i += 1;
                Kind::Other
            }
        };
        out.push(Token {
            kind,
            start,
            end: i.min(b.len()),
        });
    }
    out
}

/// A keyword that names a table after it, as far as qualifying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    /// `FROM`, `JOIN`, `USING`: a table, unless a `(` follows its name (a
    /// function), and for `FROM` and `USING` a list of them.
    Relation { list: bool },
    /// `INTO`, `UPDATE`, `TABLE`: one table, whatever follows.
    Target,
    /// `TRUNCATE`: a list of tables.
    Truncate,
}

fn names_after(word: &str, previous: Option<&str>) -> Option<Names> {
    let is = |k: &str| word.eq_ignore_ascii_case(k);
    let after = |k: &str| previous.is_some_and(|p| p.eq_ignore_ascii_case(k));
    if is("FROM") {
        // `IS [NOT] DISTINCT FROM x` compares values.
        (!after("DISTINCT")).then_some(Names::Relation { list: true })
    } else if is("USING") {
        Some(Names::Relation { list: true })
    } else if is("JOIN") {
        Some(Names::Relation { list: false })
    } else if is("INTO") || is("TABLE") {
        Some(Names::Target)
    } else if is("UPDATE") {
        // `FOR [NO KEY] UPDATE [OF name]` names no table to qualify.
        (!(after("FOR") || after("KEY"))).then_some(Names::Target)
    } else if is("TRUNCATE") {
        Some(Names::Truncate)
    } else {
        None
    }
}

/// Words that may stand between the names of a `FROM` list without ending it.
fn keeps_list(word: &str) -> bool {
    ["AS", "ONLY", "LATERAL"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

/// A parenthesised group: a subquery (its `FROM` names tables) or anything else
/// (function arguments, a column list, an expression).
struct Group {
    subquery: bool,
    /// The group's first token has not been seen yet.
    fresh: bool,
    /// A `,` at this level continues a list of tables.
    list: Option<Names>,
}

/// `sql` with each table name it reaches qualified with `schema`; `sql` itself when
/// it names no table. Each text is scanned once ([`PLACES`]): scanning cost about
/// as much as the rest of a schema tenant's checkout.
pub fn qualify(sql: &str, schema: &str) -> String {
    let at = places(sql);
    if at.is_empty() {
        return sql.to_owned();
    }
    let prefix = format!("{}.", quote_ident(schema));
    let mut out = String::with_capacity(sql.len() + at.len() * prefix.len());
    let mut from = 0;
    for &start in at.iter() {
        out.push_str(&sql[from..start]);
        out.push_str(&prefix);
        from = start;
    }
    out.push_str(&sql[from..]);
    out
}

/// [`scan`]'s answer for `sql`, from [`PLACES`] when it has it.
fn places(sql: &str) -> Arc<[usize]> {
    if sql.len() > PLACES_MAX_TEXT {
        return scan(sql).into();
    }
    let cache = || PLACES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(at) = cache().get(sql) {
        return at;
    }
    let at: Arc<[usize]> = scan(sql).into();
    cache().insert(sql.into(), at.clone());
    at
}

/// The byte offsets in `sql` of the table names to qualify, in order.
fn scan(sql: &str) -> Vec<usize> {
    let toks = tokens(sql);
    let text = |t: &Token| &sql[t.start..t.end];
    let mut at: Vec<usize> = Vec::new();
    let mut groups = vec![Group {
        subquery: true,
        fresh: false,
        list: None,
    }];
    // The keyword whose table name may come next.
    let mut expect: Option<Names> = None;
    let mut previous_word: Option<&str> = None;
    for (n, t) in toks.iter().enumerate() {
        let next = toks.get(n + 1).map(|t| t.kind);
        // The statement's own group is never popped.
        let Some(group) = groups.last_mut() else {
            break;
        };
        if group.fresh {
            group.fresh = false;
            group.subquery = t.kind == Kind::Word
                && ["SELECT", "WITH", "VALUES", "TABLE"]
                    .iter()
                    .any(|k| text(t).eq_ignore_ascii_case(k));
        }
        match t.kind {
            Kind::Word => {
                let word = text(t);
                if expect.is_some() && word.eq_ignore_ascii_case("ONLY") {
                    // `FROM ONLY "t"`: the name still comes.
                } else if let Some(names) = group
                    .subquery
                    .then(|| names_after(word, previous_word))
                    .flatten()
                {
                    expect = Some(names);
                    if names != (Names::Relation { list: false }) && names != Names::Target {
                        group.list = Some(names);
                    }
                } else {
                    expect = None;
                    if !keeps_list(word) && !is_join_word(word) {
                        group.list = None;
                    }
                }
                previous_word = Some(word);
                continue;
            }
            Kind::Quoted => {
                if let Some(names) = expect.take() {
                    let qualified = next != Some(Kind::Dot);
                    let function =
                        next == Some(Kind::Open) && matches!(names, Names::Relation { .. });
                    if qualified && !function {
                        at.push(t.start);
                    }
                }
            }
            Kind::Comma => {
                expect = group.list.map(|names| match names {
                    Names::Truncate => Names::Truncate,
                    _ => Names::Relation { list: true },
                });
            }
            Kind::Open => {
                expect = None;
                groups.push(Group {
                    subquery: false,
                    fresh: true,
                    list: None,
                });
            }
            Kind::Close => {
                expect = None;
                if groups.len() > 1 {
                    groups.pop();
                }
            }
            Kind::Dot | Kind::Other => expect = None,
        }
        previous_word = None;
    }
    at
}

fn is_join_word(word: &str) -> bool {
    [
        "LEFT", "RIGHT", "FULL", "INNER", "OUTER", "CROSS", "NATURAL",
    ]
    .iter()
    .any(|k| word.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{PLACES, PLACES_CAPACITY, PLACES_MAX_TEXT, Places, places, qualify};

    fn q(sql: &str) -> String {
        qualify(sql, "tenant_a")
    }

    #[test]
    fn a_select_names_its_table_and_leaves_column_references_alone() {
        assert_eq!(
            q(
                r#"SELECT "products"."id", "products"."name" FROM "products" WHERE "products"."deleted_at" IS NULL ORDER BY "products"."created_at" DESC LIMIT $1 OFFSET $2"#
            ),
            r#"SELECT "products"."id", "products"."name" FROM "tenant_a"."products" WHERE "products"."deleted_at" IS NULL ORDER BY "products"."created_at" DESC LIMIT $1 OFFSET $2"#
        );
    }

    #[test]
    fn joins_subqueries_and_from_lists_are_qualified() {
        assert_eq!(
            q(
                r#"SELECT "boms"."id" FROM "boms" LEFT JOIN "bom_items" AS "i" ON "boms"."id" = "i"."bom_id" WHERE "boms"."id" IN (SELECT "bom_id" FROM "bom_items") AND EXISTS (SELECT 1 FROM ONLY "materials", "products" "p")"#
            ),
            r#"SELECT "boms"."id" FROM "tenant_a"."boms" LEFT JOIN "tenant_a"."bom_items" AS "i" ON "boms"."id" = "i"."bom_id" WHERE "boms"."id" IN (SELECT "bom_id" FROM "tenant_a"."bom_items") AND EXISTS (SELECT 1 FROM ONLY "tenant_a"."materials", "tenant_a"."products" "p")"#
        );
        assert_eq!(
            q(r#"SELECT COUNT(*) FROM (SELECT "id" FROM "products") AS "sub""#),
            r#"SELECT COUNT(*) FROM (SELECT "id" FROM "tenant_a"."products") AS "sub""#
        );
    }

    #[test]
    fn writes_are_qualified() {
        assert_eq!(
            q(
                r#"INSERT INTO "products" ("id", "name") VALUES ($1, $2) ON CONFLICT ("id") DO UPDATE SET "name" = "excluded"."name" RETURNING "id", "name""#
            ),
            r#"INSERT INTO "tenant_a"."products" ("id", "name") VALUES ($1, $2) ON CONFLICT ("id") DO UPDATE SET "name" = "excluded"."name" RETURNING "id", "name""#
        );
        assert_eq!(
            q(
                r#"UPDATE "products" SET "name" = $1, "price_cents" = $2 WHERE "products"."id" = $3"#
            ),
            r#"UPDATE "tenant_a"."products" SET "name" = $1, "price_cents" = $2 WHERE "products"."id" = $3"#
        );
        assert_eq!(
            q(
                r#"delete from "products" using "materials" where "products"."id" = "materials"."id""#
            ),
            r#"delete from "tenant_a"."products" using "tenant_a"."materials" where "products"."id" = "materials"."id""#
        );
        assert_eq!(
            q(r#"TRUNCATE TABLE ONLY "a", "b" RESTART IDENTITY"#),
            r#"TRUNCATE TABLE ONLY "tenant_a"."a", "tenant_a"."b" RESTART IDENTITY"#
        );
    }

    #[test]
    fn what_names_no_table_is_left_alone() {
        for sql in [
            // Literals, comments and dollar quotes that look like SQL.
            r#"SELECT 'FROM "products"', E'\' FROM "x"', $$ FROM "y" $$, $t$ FROM "z" $t$ FROM "public"."p" -- FROM "c"
               WHERE /* FROM "d" /* nested */ FROM "e" */ 1 = 1"#,
            // Values compared, function arguments, lock clauses.
            r#"SELECT 1 FROM "s"."t" WHERE "a" IS DISTINCT FROM "b" AND "c" IS NOT DISTINCT FROM "d""#,
            r#"SELECT EXTRACT(YEAR FROM "created_at"), SUBSTRING("name" FROM 2), TRIM(BOTH FROM "x") FROM "s"."t" FOR UPDATE OF "t""#,
            r#"SELECT 1 FROM "s"."t" FOR NO KEY UPDATE OF "t" SKIP LOCKED"#,
            // Bare names: the catalog views.
            "SELECT COALESCE(SUM(n_tup_ins), 0) AS n FROM pg_stat_xact_user_tables WHERE schemaname = $1",
            "SELECT 1",
            // A set-returning function in FROM, and USING of a join.
            r#"SELECT * FROM "s"."t" JOIN "s"."u" USING ("id"), "generate_series"(1, 3)"#,
        ] {
            assert_eq!(q(sql), sql, "{sql}");
        }
    }

    #[test]
    fn the_schema_is_quoted_and_keywords_match_in_any_case() {
        assert_eq!(
            qualify(r#"select * From "t" join "u" on true"#, r#"we"ird"#),
            r#"select * From "we""ird"."t" join "we""ird"."u" on true"#
        );
    }

    #[test]
    fn a_names_list_ends_at_the_next_clause() {
        assert_eq!(
            q(
                r#"SELECT "a"."x", "b"."y" FROM "a", "b" WHERE "a"."id" = "b"."id" ORDER BY "a"."x", "b"."y""#
            ),
            r#"SELECT "a"."x", "b"."y" FROM "tenant_a"."a", "tenant_a"."b" WHERE "a"."id" = "b"."id" ORDER BY "a"."x", "b"."y""#
        );
        assert_eq!(
            q(r#"INSERT INTO "t" ("a", "b") SELECT "a", "b" FROM "u", "v" RETURNING "a", "b""#),
            r#"INSERT INTO "tenant_a"."t" ("a", "b") SELECT "a", "b" FROM "tenant_a"."u", "tenant_a"."v" RETURNING "a", "b""#
        );
    }

    #[test]
    fn a_statement_seen_before_takes_each_tenants_own_schema() {
        let sql = r#"SELECT "x" FROM "cached_once" JOIN "other" ON true"#;
        for schema in ["tenant_a", "tenant_b", "tenant_a"] {
            assert_eq!(
                qualify(sql, schema),
                format!(
                    r#"SELECT "x" FROM "{schema}"."cached_once" JOIN "{schema}"."other" ON true"#
                )
            );
        }
    }

    #[test]
    fn a_statement_text_is_scanned_once_unless_it_is_long() {
        let sql = r#"SELECT "x" FROM "scanned_once""#;
        assert!(Arc::ptr_eq(&places(sql), &places(sql)));
        let long = format!(
            r#"INSERT INTO "t" ("v") VALUES {}"#,
            vec!["(1)"; PLACES_MAX_TEXT / 3].join(", ")
        );
        assert!(!Arc::ptr_eq(&places(&long), &places(&long)));
        assert!(qualify(&long, "tenant_a").starts_with(r#"INSERT INTO "tenant_a"."t""#));
    }

    #[test]
    fn the_statements_remembered_stay_bounded() {
        for n in 0..PLACES_CAPACITY + 10 {
            let sql = format!(
                r#"SELECT "a" FROM "t" WHERE "a" IN ({})"#,
                vec!["1"; n + 1].join(", ")
            );
            assert!(q(&sql).contains(r#"FROM "tenant_a"."t""#));
        }
        let remembered = PLACES.lock().map(|m| m.len()).unwrap_or(usize::MAX);
        assert!(
            remembered <= PLACES_CAPACITY,
            "{remembered} statements remembered"
        );
    }

    #[test]
    fn the_statements_in_use_outlive_one_off_texts() {
        // A cache of its own: the shared one meets other tests' texts meanwhile.
        let mut cache = Places::new(16);
        let hot: Arc<[usize]> = Arc::from(vec![1usize]);
        cache.insert("hot".into(), hot.clone());
        for n in 0..1_000 {
            cache.insert(format!("one-off {n}").into(), Arc::from(vec![n]));
            if n % 7 == 0 {
                let found = cache.get("hot").expect("the text in use is remembered");
                assert!(Arc::ptr_eq(&found, &hot), "scanned again after {n} texts");
            }
            assert!(cache.len() <= 16, "{} texts remembered", cache.len());
        }
        assert!(cache.get("one-off 0").is_none());
    }
}
