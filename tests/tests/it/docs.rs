//! The README's configuration table stays in step with the settings the binaries read.

use streamgate::config::Setting;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md")
}

fn check(settings: &[Setting], readme: &str) {
    for setting in settings {
        let row = readme
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", setting.name)))
            .unwrap_or_else(|| panic!("README's configuration table has no row for {}", setting.name));
        if !setting.default.is_empty() {
            assert!(
                row.contains(&format!("`{}`", setting.default)),
                "README row for {} does not show its default `{}`: {row}",
                setting.name,
                setting.default
            );
        }
    }
}

#[test]
fn every_gateway_setting_is_documented_with_its_default() {
    check(gateway::settings::SETTINGS, &readme());
}

#[test]
fn every_producer_setting_is_documented_with_its_default() {
    check(producer::settings::SETTINGS, &readme());
}

#[test]
fn every_janitor_setting_is_documented_with_its_default() {
    check(janitor::settings::SETTINGS, &readme());
}
