//! The configuration reference in docs/configuration.md for tally-collector is the one the code generates.

#[test]
fn configuration_doc_is_current() {
    let table = runtime::settings::config_reference::<tally_collector::settings::Settings>();
    testkit::docs::check_section("config:tally-collector", &table).unwrap();
}
