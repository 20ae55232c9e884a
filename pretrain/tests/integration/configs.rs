use pretrain::PretrainConfig;

use crate::repository;

/// Every preset in `configs/` parses with its stage's type and passes its checks; the stage is
/// the file name's first word (`pretrain-tiny.toml` → pretrain).
#[test]
fn every_config_file_parses() {
    let directory = repository().join("configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&directory).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|extension| extension.to_str()) != Some("toml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let stage = name.split(['-', '.']).next().unwrap();
        // Stages without a crate yet get their arm when their crate lands.
        if stage == "pretrain" {
            let (config, resolved): (PretrainConfig, String) =
                training::load_config(&path, &[]).unwrap_or_else(|error| panic!("{error}"));
            config
                .validate()
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            let (again, _): (PretrainConfig, String) =
                training::parse_config(&resolved, &path, &[]).unwrap();
            assert_eq!(
                again, config,
                "{name}: the resolved TOML reads back the same"
            );
            checked += 1;
        }
        assert!(
            std::fs::read_to_string(&path).unwrap().contains("herd "),
            "{name}: the header comment gives the launch command"
        );
    }
    assert!(checked > 0, "no pretrain config in {}", directory.display());
}
