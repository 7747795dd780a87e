//! The figures a run produces: printed as `name: value unit` as they come, and
//! written together as JSON at the end.

use crate::Sizes;
use serde_json::json;
use std::path::Path;

#[derive(Default)]
pub(crate) struct Figures {
    items: Vec<(String, f64, String)>,
}

impl Figures {
    pub(crate) fn add(&mut self, name: &str, value: f64, unit: &str) {
        println!("{name}: {} {unit}", round(value));
        self.items.push((name.to_string(), value, unit.to_string()));
    }

    pub(crate) fn write_json(&self, path: &Path, sizes: &Sizes) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let figures: Vec<_> = self
            .items
            .iter()
            .map(|(name, value, unit)| json!({"name": name, "value": value, "unit": unit}))
            .collect();
        let doc = json!({
            "date": command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            "machine": {
                "kernel": command_output("uname", &["-srm"]),
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                "cpu_model": cpu_model(),
            },
            "sizes": {
                "builds": sizes.builds,
                "log_mib": sizes.log_mib,
                "builders": sizes.builders,
                "workers": sizes.workers,
            },
            "figures": figures,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
        Ok(())
    }
}

/// Three significant digits are all a noisy shared machine gives.
fn round(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let digits = (3 - value.abs().log10().floor() as i32 - 1).max(0) as usize;
    format!("{value:.digits$}")
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rounds_to_three_significant_digits() {
        assert_eq!(super::round(1234.5), "1234");
        assert_eq!(super::round(12.345), "12.3");
        assert_eq!(super::round(0.012345), "0.0123");
    }
}
