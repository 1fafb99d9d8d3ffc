//! Who may call what. The caller is identified by the bus (`GetConnectionUnixUser`), never by
//! its words: root always; the Cells unit's `User=` for check, stage, apply and license;
//! anyone else through polkit.

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
}

impl Action {
    /// The polkit action id.
    pub fn id(self) -> &'static str {
        match self {
            Action::Check => "com.pydio.cellsupdater.check",
            Action::Stage => "com.pydio.cellsupdater.stage",
            Action::Apply => "com.pydio.cellsupdater.apply",
            Action::License => "com.pydio.cellsupdater.license",
        }
    }
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
/// unit's `User=`; `polkit_bus` is the system bus polkit listens on.
pub async fn authorize(
    caller: &Caller,
    action: Action,
    cells_uid: Option<u32>,
    polkit_bus: Option<&zbus::Connection>,
) -> Result<()> {
    if caller.uid == 0 || cells_uid == Some(caller.uid) {
        return Ok(());
    }
    let refuse = |why: String| {
        Error::NotAuthorized(format!(
            "uid {} may not perform {}: {why}; run it as root, as the Cells service user, or \
             grant the action with a polkit rule",
            caller.uid,
            action.id()
        ))
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

/// Most calls one uid that is neither root nor the Cells user may have awaiting
/// authorization; more are refused at once, before polkit is asked.
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
