//! AFL++ target: `cells_updater::fuzzing::version`.
fn main() {
    afl::fuzz!(|data: &[u8]| cells_updater::fuzzing::version(data));
}
