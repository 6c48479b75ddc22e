//! The README's configuration reference for tally-collector is the one the code generates.

#[test]
fn readme_reference_is_current() {
    let table = metering::settings::config_reference::<tally_collector::settings::Settings>();
    testkit::readme::check_section("config:tally-collector", &table).unwrap();
}
