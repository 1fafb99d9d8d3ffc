//! AFL++ target: `cells_updater::fuzzing::config`.
fn main() {
    afl::fuzz!(|data: &[u8]| cells_updater::fuzzing::config(data));
}
