//! AFL++ target: `cells_updater::fuzzing::state`.
fn main() {
    afl::fuzz!(|data: &[u8]| cells_updater::fuzzing::state(data));
}
