//! The README's configuration reference for tally-agent is the one the code generates.

#[test]
fn readme_reference_is_current() {
    let table = metering::settings::config_reference::<tally_agent::settings::Settings>();
    testkit::readme::check_section("config:tally-agent", &table).unwrap();
}
