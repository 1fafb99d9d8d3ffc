//! What the configuration and the unit's facts say about the managed Cells: its user, its
//! binary and its working directory. The daemon and `cells-updater doctor`/`config` both
//! derive them here, from the unit's manager and never from a caller.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::systemd::UnitFacts;
use std::path::PathBuf;

/// The Cells service user.
#[derive(Debug, Clone)]
pub struct CellsUser {
    /// Its name (`User=`).
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// The group Cells runs with (`Group=`, else the user's primary group).
    pub group: String,
    /// Its home directory.
    pub home: PathBuf,
}

/// The Cells service user: `[cells] user`, else the unit's `User=`.
pub fn cells_user(cfg: &Config, facts: Option<&UnitFacts>) -> Option<CellsUser> {
    let name = match &cfg.user {
        Some(u) => u.clone(),
        None => facts.map(|f| f.user.clone()).filter(|u| !u.is_empty())?,
    };
    let pw = nix::unistd::User::from_name(&name).ok().flatten()?;
    let group = facts
        .map(|f| f.group.clone())
        .filter(|g| !g.is_empty())
        .or_else(|| {
            nix::unistd::Group::from_gid(pw.gid)
                .ok()
                .flatten()
                .map(|g| g.name)
        })
        .unwrap_or_default();
    Some(CellsUser {
        name,
        uid: pw.uid.as_raw(),
        group,
        home: pw.dir,
    })
}

/// The binary the unit runs: `[cells] binary`, else its `ExecStart` (under the root prefix).
pub fn binary_path(cfg: &Config, facts: Option<&UnitFacts>) -> Option<PathBuf> {
    match &cfg.binary {
        Some(b) => Some(cfg.path(b)),
        None => facts
            .and_then(|f| f.exec_path.as_ref())
            .map(|p| cfg.path(p)),
    }
}

/// Where the license and `pydio.json` live: the working directory (the unit's
/// `CELLS_WORKING_DIR`, else the Cells user's `~/.config/pydio/cells`), and whose it is.
pub fn working_dir(cfg: &Config, facts: Option<&UnitFacts>) -> Result<crate::license::Location> {
    let user = cells_user(cfg, facts).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{} has no User= (and [cells] user is not set, or names no user): cannot tell who \
             owns the license",
            cfg.unit
        ))
    })?;
    let dir = crate::license::working_dir(facts.and_then(|f| f.working_dir()), &user.home);
    Ok(crate::license::Location {
        dir: cfg.path(&dir),
        user: user.name,
        group: user.group,
    })
}
