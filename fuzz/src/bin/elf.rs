//! AFL++ target: `cells_updater::fuzzing::elf`.
fn main() {
    afl::fuzz!(|data: &[u8]| cells_updater::fuzzing::elf(data));
}
