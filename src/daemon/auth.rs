//! Who may call what. The caller is identified by the bus (`GetConnectionUnixUser`), never by
//! its words. Two roles: the Cells application (the unit's `User=`) may check, stage, apply
//! with the default options and install the license, inside the admin's policy; host admins
//! (root, or whoever polkit grants) may do everything, including the actions that change or
//! pass that policy ([`Action::ManagePolicy`]) and the ones that skip a safety step
//! ([`Action::Override`]). Anyone else goes through polkit for every action.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::time::Duration;
use zbus::zvariant::OwnedValue;

/// The polkit actions of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `com.pydio.cellsupdater.check`
    Check,
    /// `com.pydio.cellsupdater.stage`
    Stage,
    /// `com.pydio.cellsupdater.apply`
    Apply,
    /// `com.pydio.cellsupdater.license`
    License,
    /// `com.pydio.cellsupdater.manage-policy`: Hold, Release, `Force`, forgetting a bad mark,
    /// cancelling another caller's job. Host admins only.
    ManagePolicy,
    /// `com.pydio.cellsupdater.override`: Rollback, and Apply/Update/UpgradeToEnterprise with
    /// `Restart=false` or `OnFailure=keep` (no health check, or no rollback). Host admins only.
    Override,
}

impl Action {
    /// The polkit action id.
    pub fn id(self) -> &'static str {
        use crate::contract::polkit_action;
        match self {
            Action::Check => polkit_action::CHECK,
            Action::Stage => polkit_action::STAGE,
            Action::Apply => polkit_action::APPLY,
            Action::License => polkit_action::LICENSE,
            Action::ManagePolicy => polkit_action::MANAGE_POLICY,
            Action::Override => polkit_action::OVERRIDE,
        }
    }

    /// Whether the Cells application (the unit's `User=`) may perform it without polkit.
    pub fn cells_app_may(self) -> bool {
        matches!(
            self,
            Action::Check | Action::Stage | Action::Apply | Action::License
        )
    }
}

/// Whether `uid` is allowed `action` without asking polkit: root always, the Cells user for
/// the Cells application's actions.
pub fn trusted(uid: u32, action: Action, cells_uid: Option<u32>) -> bool {
    uid == 0 || (cells_uid == Some(uid) && action.cells_app_may())
}

type Subject = (String, HashMap<String, OwnedValue>);

#[zbus::proxy(
    interface = "org.freedesktop.PolicyKit1.Authority",
    default_service = "org.freedesktop.PolicyKit1",
    default_path = "/org/freedesktop/PolicyKit1/Authority"
)]
trait Authority {
    fn check_authorization(
        &self,
        subject: &Subject,
        action_id: &str,
        details: &HashMap<String, String>,
        flags: u32,
        cancellation_id: &str,
    ) -> zbus::Result<(bool, bool, HashMap<String, String>)>;
}

/// The facts one decision rests on.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Unique bus name of the caller.
    pub sender: String,
    /// Its uid, from the bus daemon.
    pub uid: u32,
    /// Whether the caller allowed interactive authentication (message flag).
    pub interactive: bool,
}

/// Asks the bus daemon for the uid behind `sender`.
pub async fn caller_uid(conn: &zbus::Connection, sender: &str) -> Result<u32> {
    let unauthorized = |e: String| Error::NotAuthorized(format!("cannot identify the caller: {e}"));
    let proxy = zbus::fdo::DBusProxy::new(conn)
        .await
        .map_err(|e| unauthorized(e.to_string()))?;
    let name = zbus::names::BusName::try_from(sender).map_err(|e| unauthorized(e.to_string()))?;
    tokio::time::timeout(
        Duration::from_secs(10),
        proxy.get_connection_unix_user(name),
    )
    .await
    .map_err(|_| unauthorized("the bus did not answer within 10 s".into()))?
    .map_err(|e| unauthorized(e.to_string()))
}

/// Decides whether `caller` may perform `action`. `cells_uid` is the uid of the managed
/// unit's `User=` (the Cells application's role, [`Action::cells_app_may`]); `polkit_bus` is
/// the system bus polkit listens on.
pub async fn authorize(
    caller: &Caller,
    action: Action,
    cells_uid: Option<u32>,
    polkit_bus: Option<&zbus::Connection>,
) -> Result<()> {
    if trusted(caller.uid, action, cells_uid) {
        return Ok(());
    }
    let cells_app = cells_uid == Some(caller.uid);
    let refuse = |why: String| {
        if cells_app {
            Error::NotAuthorized(format!(
                "uid {} is the Cells service user, and {} is a host admin's action, not the \
                 Cells application's: {why}; run it as root, or grant it with a polkit rule",
                caller.uid,
                action.id()
            ))
        } else if action.cells_app_may() {
            Error::NotAuthorized(format!(
                "uid {} may not perform {}: {why}; run it as root, as the Cells service user, \
                 or grant the action with a polkit rule",
                caller.uid,
                action.id()
            ))
        } else {
            Error::NotAuthorized(format!(
                "uid {} may not perform {}: {why}; it is a host admin's action: run it as \
                 root, or grant it with a polkit rule",
                caller.uid,
                action.id()
            ))
        }
    };
    let Some(bus) = polkit_bus else {
        return Err(refuse("polkit is not reachable on this bus".into()));
    };
    let authority = AuthorityProxy::new(bus)
        .await
        .map_err(|e| refuse(format!("polkit is not reachable ({e})")))?;
    let mut subject_details = HashMap::new();
    subject_details.insert(
        "name".to_string(),
        OwnedValue::try_from(zbus::zvariant::Value::from(caller.sender.clone()))
            .map_err(|e| refuse(e.to_string()))?,
    );
    let subject: Subject = ("system-bus-name".into(), subject_details);
    let flags = u32::from(caller.interactive);
    let wait = if caller.interactive {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(25)
    };
    let answer = tokio::time::timeout(
        wait,
        authority.check_authorization(&subject, action.id(), &HashMap::new(), flags, ""),
    )
    .await
    .map_err(|_| refuse("polkit did not answer in time".into()))?
    .map_err(|e| refuse(format!("polkit refused to decide ({e})")))?;
    match answer {
        (true, _, _) => Ok(()),
        (false, true, _) => Err(refuse(
            "polkit requires authentication; call with interactive authorization allowed \
             (busctl --allow-interactive-authorization=yes)"
                .into(),
        )),
        (false, false, _) => Err(refuse("polkit denied it".into())),
    }
}

/// Most calls one uid that needs polkit may have awaiting authorization; more are refused at
/// once, before polkit is asked.
pub const MAX_IN_FLIGHT: usize = 8;

/// Calls in flight per uid that needs polkit.
#[derive(Debug, Default)]
pub struct InFlight(std::sync::Mutex<HashMap<u32, usize>>);

/// One call counted in [`InFlight`]; uncounted when dropped.
pub struct InFlightGuard<'a> {
    table: &'a InFlight,
    uid: u32,
}

impl InFlight {
    /// Counts a call of `uid`; `NotAuthorized` at once when it already has
    /// [`MAX_IN_FLIGHT`] calls awaiting an answer.
    pub fn enter(&self, uid: u32) -> Result<InFlightGuard<'_>> {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(uid).or_insert(0);
        if *n >= MAX_IN_FLIGHT {
            return Err(Error::NotAuthorized(format!(
                "uid {uid} already has {MAX_IN_FLIGHT} calls awaiting authorization; refused \
                 without asking polkit"
            )));
        }
        *n += 1;
        Ok(InFlightGuard { table: self, uid })
    }

    /// Calls in flight, all uids together (tests and the soak).
    pub fn total(&self) -> usize {
        self.0.lock().map(|t| t.values().sum()).unwrap_or(0)
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.uid);
            }
        }
    }
}

/// Refusals logged one by one per caller uid per minute; the rest are only counted.
pub const REFUSALS_LOGGED_PER_MINUTE: u32 = 3;
/// The window refusals are counted in.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// Refused calls, per caller uid, so that a local user's flood cannot push the daemon's real
/// audit lines out through journald's rate limit: the first [`REFUSALS_LOGGED_PER_MINUTE`]
/// of each uid's minute are logged in full, the others are summed up in one line when the
/// minute ends (or when the daemon stops).
#[derive(Debug, Default)]
pub struct Refusals(std::sync::Mutex<HashMap<u32, RefusalWindow>>);

/// One uid's minute.
#[derive(Debug, Clone, Copy)]
pub struct RefusalWindow {
    start: std::time::Instant,
    logged: u32,
    /// Refusals counted but not logged.
    pub suppressed: u64,
}

impl Refusals {
    /// Counts a refusal of `uid` at `now`: `true` when it is to be logged in full. A minute
    /// that ended with refusals left unlogged is returned for its summary.
    pub fn note(&self, uid: u32, now: std::time::Instant) -> (bool, Option<RefusalWindow>) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = RefusalWindow {
            start: now,
            logged: 0,
            suppressed: 0,
        };
        let w = t.entry(uid).or_insert(fresh);
        let mut ended = None;
        if now.duration_since(w.start) >= REFUSAL_WINDOW {
            if w.suppressed > 0 {
                ended = Some(*w);
            }
            *w = fresh;
        }
        if w.logged < REFUSALS_LOGGED_PER_MINUTE {
            w.logged += 1;
            (true, ended)
        } else {
            w.suppressed += 1;
            (false, ended)
        }
    }

    /// Takes the minutes that ended by `now` (all of them with `everything`) and had
    /// refusals left unlogged: (uid, how many).
    pub fn due(&self, now: std::time::Instant, everything: bool) -> Vec<(u32, u64)> {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        t.retain(|uid, w| {
            let over = everything || now.duration_since(w.start) >= REFUSAL_WINDOW;
            if over && w.suppressed > 0 {
                out.push((*uid, w.suppressed));
            }
            !over
        });
        out.sort_unstable();
        out
    }
}

/// The summary line for refusals counted but not logged.
pub fn refusal_summary(uid: u32, count: u64) -> String {
    format!(
        "uid {uid}: {count} more refused calls in the last minute, not logged one by one \
         (at most {REFUSALS_LOGGED_PER_MINUTE} per uid per minute are)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cells_user_has_the_application_role_only() {
        let cells = Some(999);
        for a in [Action::Check, Action::Stage, Action::Apply, Action::License] {
            assert!(trusted(999, a, cells), "{a:?}");
            assert!(trusted(0, a, cells), "{a:?}");
            assert!(!trusted(65534, a, cells), "{a:?}");
        }
        for a in [Action::ManagePolicy, Action::Override] {
            assert!(!trusted(999, a, cells), "the Cells user may not {a:?}");
            assert!(trusted(0, a, cells), "{a:?}");
            assert!(!trusted(65534, a, None), "{a:?}");
        }
        assert!(!trusted(999, Action::Apply, None), "no unit, no Cells user");
    }

    #[test]
    fn refusals_are_logged_three_a_minute_then_summed_up() {
        let r = Refusals::default();
        let t0 = std::time::Instant::now();
        let logged: Vec<bool> = (0..10).map(|_| r.note(7, t0).0).collect();
        assert_eq!(
            logged,
            [true, true, true, false, false, false, false, false, false, false]
        );
        assert!(r.note(8, t0).0, "another uid has its own minute");
        assert!(r.due(t0, false).is_empty(), "the minute has not ended");
        // The next minute starts with a full log line and hands back the last one's count.
        let (log, ended) = r.note(7, t0 + REFUSAL_WINDOW);
        assert!(log);
        assert_eq!(ended.map(|w| w.suppressed), Some(7));
        for _ in 0..5 {
            r.note(7, t0 + REFUSAL_WINDOW);
        }
        assert_eq!(r.due(t0 + REFUSAL_WINDOW, true), vec![(7, 3)]);
        assert!(r.due(t0 + REFUSAL_WINDOW, true).is_empty(), "taken once");
        assert!(refusal_summary(7, 3).contains("uid 7: 3 more"));
    }

    #[tokio::test]
    async fn refusals_name_the_role() {
        let caller = |uid| Caller {
            sender: ":1.1".into(),
            uid,
            interactive: false,
        };
        let e = authorize(&caller(999), Action::ManagePolicy, Some(999), None)
            .await
            .unwrap_err();
        assert_eq!(e.name(), "NotAuthorized");
        assert!(e.message().contains("Cells service user"), "{e}");
        assert!(e.message().contains("manage-policy"), "{e}");
        let e = authorize(&caller(65534), Action::Override, Some(999), None)
            .await
            .unwrap_err();
        assert!(e.message().contains("host admin"), "{e}");
        assert!(authorize(&caller(999), Action::Apply, Some(999), None)
            .await
            .is_ok());
    }
}
