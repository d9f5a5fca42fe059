//! The SQL both backends run, one file per statement under `../sql/`
//! (PostgreSQL-only ones under `../sql/postgres/`), and what is done to text
//! before it is bound.

use std::borrow::Cow;

/// Free-form text a function controls (its error type and message) with
/// each NUL replaced by U+FFFD. PostgreSQL refuses NUL in `text` (SQLSTATE
/// 22021, a permanent error), which would leave such an attempt unrecordable
/// and its event redelivered for ever; both backends store the same thing.
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

pub(crate) const PUT_PACKAGE: &str = include_str!("../sql/put_package.sql");
pub(crate) const GET_PACKAGE: &str = include_str!("../sql/get_package.sql");
pub(crate) const PACKAGE_SIZE: &str = include_str!("../sql/package_size.sql");
pub(crate) const INSERT_VERSION: &str = include_str!("../sql/insert_version.sql");
pub(crate) const SET_CURRENT_VERSION: &str = include_str!("../sql/set_current_version.sql");
pub(crate) const CURRENT_VERSION: &str = include_str!("../sql/current_version.sql");
pub(crate) const LATEST_VERSION_NUMBER: &str = include_str!("../sql/latest_version_number.sql");
pub(crate) const GET_VERSION: &str = include_str!("../sql/get_version.sql");
pub(crate) const SET_ALIAS: &str = include_str!("../sql/set_alias.sql");
pub(crate) const LIST_ALIASES: &str = include_str!("../sql/list_aliases.sql");
pub(crate) const DELETE_ALIAS: &str = include_str!("../sql/delete_alias.sql");
pub(crate) const LIST_FUNCTIONS: &str = include_str!("../sql/list_functions.sql");
pub(crate) const INSERT_INVOCATION: &str = include_str!("../sql/insert_invocation.sql");
pub(crate) const GET_INVOCATION: &str = include_str!("../sql/get_invocation.sql");
pub(crate) const MARK_RUNNING: &str = include_str!("../sql/mark_running.sql");
pub(crate) const INSERT_ATTEMPT: &str = include_str!("../sql/insert_attempt.sql");
pub(crate) const INSERT_COMPLETION: &str = include_str!("../sql/insert_completion.sql");
/// Most rows in one [`insert_completions`] statement (14 parameters each:
/// 7000 in all, well under SQLite's 32766 and PostgreSQL's 65535).
pub(crate) const COMPLETIONS_PER_INSERT: usize = 500;
pub(crate) const COMPLETION_BY_KEY: &str = include_str!("../sql/completion_by_key.sql");
pub(crate) const COMPLETION_BY_ID: &str = include_str!("../sql/completion_by_id.sql");
pub(crate) const ATTEMPT_STATS: &str = include_str!("../sql/attempt_stats.sql");
pub(crate) const USAGE: &str = include_str!("../sql/usage.sql");
pub(crate) const LAST_ATTEMPT: &str = include_str!("../sql/last_attempt.sql");
pub(crate) const FENCE_ATTEMPT: &str = include_str!("../sql/fence_attempt.sql");
pub(crate) const INSERT_FENCED: &str = include_str!("../sql/insert_fenced.sql");
pub(crate) const EPOCH_RECORDED: &str = include_str!("../sql/epoch_recorded.sql");
pub(crate) const LIST_ATTEMPTS: &str = include_str!("../sql/list_attempts.sql");
pub(crate) const CLAIM_TICK: &str = include_str!("../sql/claim_tick.sql");
pub(crate) const GET_TICK: &str = include_str!("../sql/get_tick.sql");
pub(crate) const LAST_TICK: &str = include_str!("../sql/last_tick.sql");
pub(crate) const LIST_TICKS: &str = include_str!("../sql/list_ticks.sql");
pub(crate) const INSERT_SCHEDULE: &str = include_str!("../sql/insert_schedule.sql");
pub(crate) const LIST_SCHEDULES: &str = include_str!("../sql/list_schedules.sql");
pub(crate) const PAUSE_SCHEDULE: &str = include_str!("../sql/pause_schedule.sql");
pub(crate) const DELETE_SCHEDULE: &str = include_str!("../sql/delete_schedule.sql");
pub(crate) const UPSERT_DEAD_LETTER: &str = include_str!("../sql/upsert_dead_letter.sql");
pub(crate) const LIST_DEAD_LETTERS: &str = include_str!("../sql/list_dead_letters.sql");
pub(crate) const GET_DEAD_LETTER: &str = include_str!("../sql/get_dead_letter.sql");
pub(crate) const CLAIM_REDRIVE: &str = include_str!("../sql/claim_redrive.sql");
pub(crate) const RELEASE_REDRIVE: &str = include_str!("../sql/release_redrive.sql");

/// PostgreSQL only: serializes deploys of one function (a two-key advisory
/// lock whose first key, "stok", keeps it apart from sqlx's single-key
/// migration lock).
pub(crate) const PG_DEPLOY_LOCK: &str = include_str!("../sql/postgres/deploy_lock.sql");
pub(crate) const FUNCTION_NAMESPACE: &str = include_str!("../sql/function_namespace.sql");
pub(crate) const LIST_VERSIONS: &str = include_str!("../sql/list_versions.sql");
pub(crate) const ROLLBACK_VERSION: &str = include_str!("../sql/rollback_version.sql");
pub(crate) const DELETE_FUNCTION: &str = include_str!("../sql/delete_function.sql");
pub(crate) const INSERT_TOKEN: &str = include_str!("../sql/insert_token.sql");
pub(crate) const TOKEN_BY_HASH: &str = include_str!("../sql/token_by_hash.sql");
pub(crate) const TOKEN_SIGV4: &str = include_str!("../sql/token_sigv4.sql");
pub(crate) const LIST_TOKENS: &str = include_str!("../sql/list_tokens.sql");
pub(crate) const REVOKE_TOKEN: &str = include_str!("../sql/revoke_token.sql");
pub(crate) const CLAIM_SETTING: &str = include_str!("../sql/claim_setting.sql");
pub(crate) const GET_SETTING: &str = include_str!("../sql/get_setting.sql");
pub(crate) const REPLACE_SETTING: &str = include_str!("../sql/replace_setting.sql");
pub(crate) const PUT_REGISTRY_CREDENTIAL: &str = include_str!("../sql/put_registry_credential.sql");
pub(crate) const REGISTRY_CREDENTIAL: &str = include_str!("../sql/registry_credential.sql");
pub(crate) const LIST_REGISTRY_CREDENTIALS: &str = include_str!("../sql/list_registry_credentials.sql");
pub(crate) const DELETE_REGISTRY_CREDENTIAL: &str = include_str!("../sql/delete_registry_credential.sql");
pub(crate) const LIST_INVOCATIONS: &str = include_str!("../sql/list_invocations.sql");
pub(crate) const LIST_INVOCATIONS_OF_FUNCTION: &str = include_str!("../sql/list_invocations_of_function.sql");

/// The whole UTC hours inside a usage window `[since, until)` (`None`: open),
/// `[from, to)`, which usage.sql reads from `usage_hourly`; the rest of the
/// window is read from the attempts. A window with no whole hour gives an
/// empty range at `until`, so the attempts cover all of it.
pub(crate) fn whole_hours(since: Option<i64>, until: Option<i64>) -> (i64, i64) {
    const HOUR: i64 = 3_600_000;
    // since rounded up, until rounded down, to whole hours.
    let from = since.map_or(i64::MIN, |s| {
        let up = if s.rem_euclid(HOUR) == 0 { 0 } else { 1 };
        s.div_euclid(HOUR).saturating_add(up).saturating_mul(HOUR)
    });
    let to = until.map_or(i64::MAX, |u| u.div_euclid(HOUR).saturating_mul(HOUR));
    if from < to {
        (from, to)
    } else {
        let end = until.unwrap_or(i64::MAX);
        (end, end)
    }
}

/// How a generated statement writes its parameters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Placeholders {
    /// `$1, $2, ...` (PostgreSQL's only form).
    Numbered,
    /// `?, ?, ...` (SQLite): SQLite finds a named or numbered parameter by
    /// a linear scan of the statement's names for every bind, so binding
    /// 1400 `$N` took ~2 ms against ~0.1 ms for 1400 `?`.
    Anonymous,
}

/// [`INSERT_COMPLETION`] for `rows` completions in one statement: its
/// parameter tuple repeated (`($1..$14), ($15..$28), ...` or all `?`), with
/// its `ON CONFLICT DO NOTHING` for each row.
pub(crate) fn insert_completions(rows: usize, placeholders: Placeholders) -> String {
    let (head, rest) = INSERT_COMPLETION
        .split_once("VALUES")
        .expect("insert_completion.sql has VALUES");
    let (tuple, tail) = rest.split_once(')').expect("insert_completion.sql has one tuple");
    let columns = tuple.matches('$').count();
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * columns * 6);
    sql.push_str(head);
    sql.push_str("VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for col in 0..columns {
            if col > 0 {
                sql.push_str(", ");
            }
            match placeholders {
                Placeholders::Numbered => sql.push_str(&format!("${}", row * columns + col + 1)),
                Placeholders::Anonymous => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

#[cfg(test)]
mod tests {
    /// A statement without its leading comment lines.
    fn body(sql: &str) -> String {
        sql.lines()
            .skip_while(|l| l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_one_function_listing_is_the_listing_with_function_fixed() {
        let mut expected = body(super::LIST_INVOCATIONS);
        for t in ["c", "d", "i", "r"] {
            let any = format!("($1 = '' OR {t}.function = $1)");
            assert_eq!(expected.matches(&any).count(), 1, "{any}");
            expected = expected.replace(&any, &format!("{t}.function = $1"));
        }
        assert_eq!(body(super::LIST_INVOCATIONS_OF_FUNCTION), expected);
    }

    #[test]
    fn many_completions_are_the_one_row_insert_repeated() {
        use super::{Placeholders, insert_completions};
        let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            squash(&insert_completions(1, Placeholders::Numbered)),
            squash(super::INSERT_COMPLETION)
        );
        let two = squash(&insert_completions(2, Placeholders::Numbered));
        assert!(two.contains("$13, $14), ($15, $16,"), "{two}");
        assert!(two.ends_with("$27, $28) ON CONFLICT DO NOTHING"), "{two}");
        assert_eq!(two.matches('$').count(), 28);
        let anonymous = squash(&insert_completions(2, Placeholders::Anonymous));
        // The same text with each `$N` a `?`.
        let mut unnumbered = String::new();
        let mut chars = two.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '$' {
                unnumbered.push(c);
                continue;
            }
            unnumbered.push('?');
            while chars.next_if(char::is_ascii_digit).is_some() {}
        }
        assert_eq!(anonymous, unnumbered);
        let most = insert_completions(super::COMPLETIONS_PER_INSERT, Placeholders::Anonymous);
        assert!(most.matches('?').count() <= 32766, "SQLite's parameter limit");
    }

    #[test]
    fn usage_windows_split_into_whole_hours_and_edges() {
        use super::whole_hours;
        const H: i64 = 3_600_000;
        assert_eq!(whole_hours(None, None), (i64::MIN, i64::MAX));
        assert_eq!(whole_hours(Some(H), Some(3 * H)), (H, 3 * H), "aligned: all rollup");
        assert_eq!(whole_hours(Some(H + 1), Some(3 * H + 5)), (2 * H, 3 * H));
        assert_eq!(whole_hours(Some(H + 1), None), (2 * H, i64::MAX));
        assert_eq!(whole_hours(None, Some(H + 1)), (i64::MIN, H));
        // No whole hour inside: nothing from the rollup, all from attempts.
        let (from, to) = whole_hours(Some(H + 1), Some(H + 9));
        assert_eq!(from, to);
        assert_eq!(from, H + 9);
    }
}
