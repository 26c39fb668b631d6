//! `CREATE DATABASE` and `DROP DATABASE`, as PostgreSQL 15 spells them (sqlparser reads neither
//! PostgreSQL's options nor `WITH (FORCE)`, so they are parsed here from tokens).
//!
//! A database is its own row store (commit log and trees) and stream logs, under
//! `tables/<dir>/` and `log/<dir>/` ([`crate::catalog::database_dir`]).
//!
//! What must stay true:
//! - CREATE: leftovers of an earlier database of the same name are removed before the catalog
//!   names the new one, so it starts empty; the catalog is written (durably) before the store
//!   is opened, and a store that cannot be opened takes the catalog entry back out.
//! - DROP: the database leaves the engine's open set first (so no session can start on it),
//!   then the catalog (durably), and only then are its files removed; a crash in between
//!   leaves directories no catalog names, which the next start removes. Other databases'
//!   files are never touched.

use std::sync::Arc;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};

use super::{command, EngineInner, OpenDatabase, Output, Session};
use crate::catalog::TEMPLATE_DATABASES;
use crate::error::{Error, Result};
use crate::stream::logcore::storage_error;

/// How long DROP DATABASE waits for a database's sessions to end, in steps: 50 × 100 ms, as
/// PostgreSQL's `CountOtherDBBackends`.
const IN_USE_WAITS: u32 = 50;
const IN_USE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// A parsed `CREATE DATABASE` or `DROP DATABASE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DatabaseDdl {
    Create {
        name: String,
        /// Option names (upper case, `CONNECTION LIMIT` as one) and their values as written.
        options: Vec<(String, OptionValue)>,
    },
    Drop {
        name: String,
        if_exists: bool,
        force: bool,
    },
}

/// The value of a CREATE DATABASE option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OptionValue {
    /// A name or keyword (folded to lower case unless quoted).
    Word(String),
    /// A string literal.
    Text(String),
    /// A number, sign included.
    Number(String),
    /// `DEFAULT`.
    Default,
}

impl OptionValue {
    fn text(&self) -> &str {
        match self {
            OptionValue::Word(s) | OptionValue::Text(s) | OptionValue::Number(s) => s,
            OptionValue::Default => "DEFAULT",
        }
    }
}

/// The options of PostgreSQL 15's CREATE DATABASE (`CONNECTION LIMIT` is two words).
const OPTIONS: [&str; 15] = [
    "OWNER",
    "TEMPLATE",
    "ENCODING",
    "STRATEGY",
    "LOCALE",
    "LC_COLLATE",
    "LC_CTYPE",
    "ICU_LOCALE",
    "LOCALE_PROVIDER",
    "COLLATION_VERSION",
    "TABLESPACE",
    "ALLOW_CONNECTIONS",
    "CONNECTION LIMIT",
    "IS_TEMPLATE",
    "OID",
];

/// Reads `sql` as CREATE DATABASE or DROP DATABASE; `None` when it is another statement.
pub(crate) fn parse_database_ddl(sql: &str) -> Option<Result<DatabaseDdl>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut tokens: Vec<Token> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    while matches!(tokens.last(), Some(Token::SemiColon)) {
        tokens.pop();
    }
    let keyword = |t: Option<&Token>, k: &str| matches!(t, Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(k));
    let create = keyword(tokens.first(), "CREATE");
    if !(create || keyword(tokens.first(), "DROP")) || !keyword(tokens.get(1), "DATABASE") {
        return None;
    }
    let mut p = Tokens {
        tokens: &tokens,
        at: 2,
    };
    Some(if create {
        parse_create(&mut p)
    } else {
        parse_drop(&mut p)
    })
}

struct Tokens<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl Tokens<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<&Token> {
        let t = self.tokens.get(self.at);
        self.at += 1;
        t
    }

    /// Consumes the unquoted keyword `k` if it comes next.
    fn keyword(&mut self, k: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(k));
        if found {
            self.at += 1;
        }
        found
    }

    /// PostgreSQL's 42601 at the next token.
    fn syntax_error(&self) -> Error {
        match self.peek() {
            Some(t) => Error::SyntaxRule(format!("syntax error at or near \"{t}\"")),
            None => Error::SyntaxRule("syntax error at end of input".into()),
        }
    }

    fn name(&mut self) -> Result<String> {
        match self.peek() {
            Some(Token::Word(w)) => {
                let n = word_name(w);
                self.at += 1;
                Ok(n)
            }
            _ => Err(self.syntax_error()),
        }
    }

    fn end(&self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.syntax_error()),
        }
    }
}

/// An identifier as PostgreSQL reads it: unquoted names fold to lower case.
fn word_name(w: &Word) -> String {
    if w.quote_style.is_some() {
        w.value.clone()
    } else {
        w.value.to_ascii_lowercase()
    }
}

fn parse_create(p: &mut Tokens<'_>) -> Result<DatabaseDdl> {
    if matches!(p.tokens.get(p.at..p.at + 2), Some([Token::Word(a), Token::Word(b)])
        if a.quote_style.is_none() && a.value.eq_ignore_ascii_case("IF")
            && b.quote_style.is_none() && b.value.eq_ignore_ascii_case("NOT"))
    {
        // PostgreSQL has no CREATE DATABASE IF NOT EXISTS.
        p.at += 1;
        return Err(p.syntax_error());
    }
    let name = p.name()?;
    p.keyword("WITH");
    let mut options: Vec<(String, OptionValue)> = Vec::new();
    while let Some(Token::Word(w)) = p.peek() {
        if w.quote_style.is_some() {
            return Err(p.syntax_error());
        }
        let mut option = w.value.to_ascii_uppercase();
        p.at += 1;
        if option == "CONNECTION" {
            if !p.keyword("LIMIT") {
                return Err(p.syntax_error());
            }
            option = "CONNECTION LIMIT".into();
        }
        if matches!(p.peek(), Some(Token::Eq)) {
            p.at += 1;
        }
        let negative = matches!(p.peek(), Some(Token::Minus));
        if negative {
            p.at += 1;
        }
        let value = match p.next() {
            Some(Token::Number(n, _)) => {
                OptionValue::Number(if negative { format!("-{n}") } else { n.clone() })
            }
            _ if negative => {
                p.at -= 1;
                return Err(p.syntax_error());
            }
            Some(Token::SingleQuotedString(s)) => OptionValue::Text(s.clone()),
            Some(Token::Word(w))
                if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("DEFAULT") =>
            {
                OptionValue::Default
            }
            Some(Token::Word(w)) => OptionValue::Word(word_name(w)),
            _ => {
                p.at -= 1;
                return Err(p.syntax_error());
            }
        };
        if !OPTIONS.contains(&option.as_str()) {
            return Err(Error::SyntaxRule(format!(
                "option \"{}\" not recognized",
                option.to_ascii_lowercase()
            )));
        }
        if options.iter().any(|(o, _)| *o == option) {
            return Err(Error::SyntaxRule("conflicting or redundant options".into()));
        }
        options.push((option, value));
    }
    p.end()?;
    Ok(DatabaseDdl::Create { name, options })
}

fn parse_drop(p: &mut Tokens<'_>) -> Result<DatabaseDdl> {
    let if_exists = if p.keyword("IF") {
        if !p.keyword("EXISTS") {
            return Err(p.syntax_error());
        }
        true
    } else {
        false
    };
    let name = p.name()?;
    let mut force = false;
    let with = p.keyword("WITH");
    if matches!(p.peek(), Some(Token::LParen)) {
        p.at += 1;
        loop {
            if p.keyword("FORCE") {
                force = true;
            } else {
                return Err(p.syntax_error());
            }
            match p.next() {
                Some(Token::Comma) => continue,
                Some(Token::RParen) => break,
                _ => {
                    p.at -= 1;
                    return Err(p.syntax_error());
                }
            }
        }
    } else if with {
        return Err(p.syntax_error());
    }
    p.end()?;
    Ok(DatabaseDdl::Drop {
        name,
        if_exists,
        force,
    })
}

/// Checks CREATE DATABASE's options: those that ask for what every braid database is (UTF8,
/// the C locale, template0 or template1, the default tablespace, ...) are accepted; the rest
/// are refused with the SQLSTATE PostgreSQL gives for a bad value, or 0A000 for a setting
/// braid does not have.
fn check_create_options(options: &[(String, OptionValue)], user: &str) -> Result<()> {
    let unsupported = |option: &str, value: &OptionValue, why: &str| {
        Error::Unsupported(format!(
            "CREATE DATABASE ... {option} {} is not supported: {why}",
            value.text()
        ))
    };
    for (option, value) in options {
        let text = value.text();
        let lower = text.to_ascii_lowercase();
        if *value == OptionValue::Default {
            continue;
        }
        match option.as_str() {
            "OWNER" => {
                if text != user {
                    return Err(Error::UndefinedObject(format!(
                        "role \"{text}\" does not exist"
                    )));
                }
            }
            "TEMPLATE" => {
                if !TEMPLATE_DATABASES.contains(&text) {
                    return Err(Error::Unsupported(format!(
                        "CREATE DATABASE ... TEMPLATE {text} is not supported: braid creates \
                         every database empty, as from template0 or template1"
                    )));
                }
            }
            "ENCODING" => match lower.as_str() {
                "utf8" | "utf-8" | "unicode" | "6" => {}
                _ if crate::pg_catalog::functions::is_encoding(text) => {
                    // Encoding names are shown in upper case, as PostgreSQL shows them.
                    return Err(Error::Unsupported(format!(
                        "CREATE DATABASE ... ENCODING {} is not supported: braid stores text \
                         as UTF8 only",
                        text.to_ascii_uppercase()
                    )));
                }
                _ => {
                    return Err(Error::UndefinedObject(format!(
                        "{text} is not a valid encoding name"
                    )))
                }
            },
            "LOCALE" | "LC_COLLATE" | "LC_CTYPE" => match text {
                "C" | "POSIX" | "c" | "posix" => {}
                _ => {
                    return Err(unsupported(
                        option,
                        value,
                        "braid compares text bytewise, as PostgreSQL's C locale",
                    ))
                }
            },
            "LOCALE_PROVIDER" => {
                if lower != "libc" {
                    return Err(unsupported(
                        option,
                        value,
                        "braid has the libc provider only",
                    ));
                }
            }
            "STRATEGY" => {
                if lower != "wal_log" && lower != "file_copy" {
                    return Err(Error::InvalidParameter(format!(
                        "invalid create database strategy \"{text}\""
                    )));
                }
            }
            "TABLESPACE" => match text {
                "pg_default" => {}
                "pg_global" => {
                    return Err(Error::InvalidParameter(
                        "pg_global cannot be used as default tablespace".into(),
                    ))
                }
                _ => {
                    return Err(Error::UndefinedObject(format!(
                        "tablespace \"{text}\" does not exist"
                    )))
                }
            },
            "ALLOW_CONNECTIONS" => {
                if !matches!(lower.as_str(), "true" | "on" | "1" | "yes" | "t") {
                    return Err(unsupported(
                        option,
                        value,
                        "every braid database accepts connections",
                    ));
                }
            }
            "IS_TEMPLATE" => {
                if !matches!(lower.as_str(), "false" | "off" | "0" | "no" | "f") {
                    return Err(unsupported(
                        option,
                        value,
                        "braid has no template databases",
                    ));
                }
            }
            "CONNECTION LIMIT" => {
                if text != "-1" {
                    return Err(unsupported(
                        option,
                        value,
                        "braid has no per-database connection limit (max_connections applies)",
                    ));
                }
            }
            _ => {
                return Err(unsupported(
                    option,
                    value,
                    "braid does not have this setting",
                ))
            }
        }
    }
    Ok(())
}

impl Session {
    /// Runs a CREATE DATABASE or DROP DATABASE.
    pub(super) async fn database_ddl(&self, ddl: &DatabaseDdl) -> Result<Output> {
        match ddl {
            DatabaseDdl::Create { name, options } => {
                if self.txn.is_open() {
                    return Err(Error::ActiveTransaction("CREATE DATABASE"));
                }
                check_create_options(options, &self.user)?;
                self.engine.create_database(name).await?;
                Ok(command("CREATE DATABASE"))
            }
            DatabaseDdl::Drop {
                name,
                if_exists,
                force,
            } => {
                if self.txn.is_open() {
                    return Err(Error::ActiveTransaction("DROP DATABASE"));
                }
                if *force {
                    return Err(Error::Unsupported(
                        "DROP DATABASE ... WITH (FORCE) is not supported: the other sessions \
                         must disconnect first"
                            .into(),
                    ));
                }
                if !self
                    .engine
                    .drop_database(name, *if_exists, &self.database)
                    .await?
                {
                    self.skipped_missing("database", name);
                }
                Ok(command("DROP DATABASE"))
            }
        }
    }
}

impl EngineInner {
    /// Creates database `name` with an empty `public` schema and opens its store.
    async fn create_database(&self, name: &str) -> Result<()> {
        let _ddl = self.database_ddl.lock().await;
        if self.catalog.database_exists(name) || TEMPLATE_DATABASES.contains(&name) {
            return Err(Error::DuplicateDatabase(name.to_string()));
        }
        // A database of this name dropped before a crash may have left its files.
        self.remove_database_files(name).await?;
        self.catalog.create_database(name).await?;
        let rows = match self.open_database(name).await {
            Ok(rows) => rows,
            Err(e) => {
                // Keep catalog and disk consistent: a database whose store cannot be opened
                // is not left in the catalog.
                let _ = self.catalog.drop_database(name).await;
                let _ = self.remove_database_files(name).await;
                return Err(e);
            }
        };
        self.databases
            .lock()
            .insert(name.to_string(), OpenDatabase { rows, sessions: 0 });
        tracing::info!(database = %name, "created database");
        Ok(())
    }

    /// Drops database `name` (not `current`, the session's own) if no session uses it:
    /// out of the catalog, then its files.
    /// Drops database `name`; `false` when it did not exist and `if_exists` let that pass.
    async fn drop_database(&self, name: &str, if_exists: bool, current: &str) -> Result<bool> {
        let _ddl = self.database_ddl.lock().await;
        if !self.catalog.database_exists(name) {
            if TEMPLATE_DATABASES.contains(&name) {
                return Err(Error::WrongObjectType(
                    "cannot drop a template database".into(),
                ));
            }
            if if_exists {
                return Ok(false);
            }
            return Err(Error::UndefinedDatabase(name.to_string()));
        }
        if name == current {
            return Err(Error::ObjectInUse {
                message: "cannot drop the currently open database".into(),
                detail: None,
            });
        }
        // Like PostgreSQL, give sessions that are closing a moment to go (a client that just
        // disconnected may not have been noticed yet) before refusing.
        let mut waits = 0;
        let open = loop {
            let busy = {
                let mut dbs = self.databases.lock();
                match dbs.get(name).map(|d| d.sessions) {
                    Some(n) if n > 0 => n,
                    _ => break dbs.remove(name),
                }
            };
            if waits == IN_USE_WAITS {
                return Err(Error::ObjectInUse {
                    message: format!("database \"{name}\" is being accessed by other users"),
                    detail: Some(if busy == 1 {
                        "There is 1 other session using the database.".into()
                    } else {
                        format!("There are {busy} other sessions using the database.")
                    }),
                });
            }
            waits += 1;
            tokio::time::sleep(IN_USE_WAIT).await;
        };
        let streams: Vec<u64> = self
            .catalog
            .tables(name)
            .into_iter()
            .filter(|(_, t)| t.is_stream())
            .map(|(_, t)| t.id)
            .collect();
        if let Err(e) = self.catalog.drop_database(name).await {
            if let Some(open) = open {
                self.databases.lock().insert(name.to_string(), open);
            }
            return Err(e);
        }
        // The catalog no longer names the database: from here on only its files go.
        for id in &streams {
            let log = self.open.lock().await.remove(id);
            if let Some(log) = log {
                log.close().await;
            }
            self.logs.remove(name, *id).await?;
        }
        if let Some(open) = open {
            match Arc::try_unwrap(open.rows) {
                // Its files are about to go: stopping is enough, nothing needs flushing.
                Ok(rows) => rows.store.abort().await,
                Err(_) => tracing::info!(
                    database = %name,
                    "the dropped database's row store is still referenced; removing its files"
                ),
            }
        }
        self.remove_database_files(name).await?;
        tracing::info!(database = %name, "dropped database");
        Ok(true)
    }

    /// Removes database `name`'s directories, if any.
    async fn remove_database_files(&self, name: &str) -> Result<()> {
        for dir in self.database_dirs(name) {
            if self.row_fs.exists(&dir).await.map_err(storage_error)? {
                self.row_fs
                    .remove_dir_all(&dir)
                    .await
                    .map_err(storage_error)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Option<Result<DatabaseDdl>> {
        parse_database_ddl(sql)
    }

    #[test]
    fn reads_postgresql_spellings() {
        assert!(parse("CREATE TABLE t (a int)").is_none());
        assert!(parse("DROP TABLE database").is_none());
        let Some(Ok(DatabaseDdl::Create { name, options })) = parse(
            "create database \"My Db\" WITH OWNER = postgres ENCODING 'UTF8' \
             TEMPLATE template0 CONNECTION LIMIT -1 LC_COLLATE = 'C';",
        ) else {
            panic!("CREATE DATABASE did not parse");
        };
        assert_eq!(name, "My Db");
        assert_eq!(
            options,
            vec![
                ("OWNER".into(), OptionValue::Word("postgres".into())),
                ("ENCODING".into(), OptionValue::Text("UTF8".into())),
                ("TEMPLATE".into(), OptionValue::Word("template0".into())),
                ("CONNECTION LIMIT".into(), OptionValue::Number("-1".into())),
                ("LC_COLLATE".into(), OptionValue::Text("C".into())),
            ]
        );
        assert_eq!(
            parse("DROP DATABASE IF EXISTS Shop WITH (FORCE)").and_then(Result::ok),
            Some(DatabaseDdl::Drop {
                name: "shop".into(),
                if_exists: true,
                force: true
            })
        );
    }

    #[test]
    fn refuses_what_postgresql_refuses() {
        let err = |sql: &str| match parse(sql) {
            Some(Err(e)) => e.to_string(),
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(err("CREATE DATABASE"), "syntax error at end of input");
        assert_eq!(err("CREATE DATABASE a b"), "syntax error at end of input");
        assert_eq!(err("CREATE DATABASE a b 1"), "option \"b\" not recognized");
        assert_eq!(
            err("CREATE DATABASE a OWNER x OWNER x"),
            "conflicting or redundant options"
        );
        assert_eq!(err("DROP DATABASE IF a"), "syntax error at or near \"a\"");
        let check = |sql: &str| match parse(sql) {
            Some(Ok(DatabaseDdl::Create { options, .. })) => {
                check_create_options(&options, "postgres")
            }
            other => panic!("{sql}: {other:?}"),
        };
        assert!(check("CREATE DATABASE a ENCODING 'utf8' LOCALE 'C' STRATEGY wal_log").is_ok());
        assert!(matches!(
            check("CREATE DATABASE a ENCODING LATIN1"),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            check("CREATE DATABASE a OWNER bob"),
            Err(Error::UndefinedObject(m)) if m == "role \"bob\" does not exist"
        ));
        assert!(matches!(
            check("CREATE DATABASE a TABLESPACE nowhere"),
            Err(Error::UndefinedObject(_))
        ));
    }
}
