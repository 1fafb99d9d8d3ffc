//! AFL++ target: `cells_updater::fuzzing::dropin`.
fn main() {
    afl::fuzz!(|data: &[u8]| cells_updater::fuzzing::dropin(data));
}
