//! AFL++ target: `cells_updater::fuzzing::keys`.
fn main() {
    afl::fuzz!(|data: &[u8]| cells_updater::fuzzing::keys(data));
}
