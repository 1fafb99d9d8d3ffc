//! `Check`: one question to the update server at a time, shared by the calls that arrive
//! while it is asked; only an answer for this host's own package and channel is recorded.

use super::Daemon;
use crate::error::Result;
use crate::package::Channel;
use crate::policy::Assessed;
use crate::state::Lifecycle;

impl Daemon {
    /// Asks the update server (or shares the answer of the same question asked meanwhile),
    /// records and announces what is new, and returns every offer with its verdict.
    pub(super) async fn check(
        &self,
        package: Option<crate::package::Package>,
        channel: Option<Channel>,
    ) -> Result<Vec<Assessed>> {
        // A check does not disturb a running job; it only moves the state when at rest.
        let moved = {
            let mut store = self.store.lock().await;
            let idle = self.running_job().is_none();
            idle && store.get().state.is_resting() && store.transition(Lifecycle::Checking).is_ok()
        };
        self.publish().await;
        // One question to the server at a time: a call that arrives while another asks waits
        // for it and shares its answer (same options), so a flood of Checks costs one helper
        // run at a time, not one each.
        let arrived = std::time::Instant::now();
        let asked = (package, channel);
        let result = {
            let mut last = self.last_check.lock().await;
            match &*last {
                Some(a) if a.asked == asked && a.at >= arrived => a.result.clone(),
                _ => {
                    let result = match self.bounds().await {
                        Ok(bounds) => self.check_now(&bounds, package, channel, false).await,
                        Err(e) => Err(e),
                    };
                    *last = Some(super::CheckAnswer {
                        asked,
                        at: std::time::Instant::now(),
                        result: result.clone(),
                    });
                    result
                }
            }
        };
        // Only an answer for this host's own package and channel is recorded: a Check for
        // another one (any caller may ask) must not stand in for the timer's next check, nor
        // fill AvailableVersions with releases the timer would then fail to install.
        let own_package = match &asked.0 {
            None => true,
            Some(p) => *p == self.package().await,
        };
        let own_channel = match &asked.1 {
            None => true,
            Some(c) => *c == self.channel_settled().await,
        };
        let own = own_package && own_channel;
        let new = match &result {
            Ok(a) if own => self.record_check(a).await.unwrap_or_default(),
            _ => Vec::new(),
        };
        {
            let mut store = self.store.lock().await;
            if let Err(e) = &result {
                let msg = e.message();
                let _ = store.update(|d| d.last_error = msg);
            }
            // Back to rest only if no job took over while the server was asked.
            if moved && store.get().state == Lifecycle::Checking {
                let rest = store.resting();
                let _ = store.transition(rest);
            }
        }
        self.publish().await;
        self.announce(&new).await;
        result
    }
}
