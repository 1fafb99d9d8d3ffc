//! AFL++ target: `cells_updater::fuzzing::update_response`.
fn main() {
    afl::fuzz!(|data: &[u8]| cells_updater::fuzzing::update_response(data));
}
