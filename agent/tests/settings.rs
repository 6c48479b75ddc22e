//! The configuration reference in docs/configuration.md for tally-agent is the one the code generates.

#[test]
fn configuration_doc_is_current() {
    let table = runtime::settings::config_reference::<tally_agent::settings::Settings>();
    testkit::docs::check_section("config:tally-agent", &table).unwrap();
}
