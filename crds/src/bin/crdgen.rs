//! Writes the gpufed CRDs as YAML: into the directory given as argument (one file per
//! kind), or to standard output when there is none. `--no-cel` strips the CEL rules,
//! for API servers older than 1.25 (see `gpufed_api::crd::strip_cel`).
#![forbid(unsafe_code)]

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut out: Option<PathBuf> = None;
    let mut no_cel = false;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("--no-cel") => no_cel = true,
            Some(flag) if flag.starts_with('-') => {
                return Err(format!("unknown flag {flag}; usage: crdgen [--no-cel] [DIR]").into());
            }
            _ => out = Some(PathBuf::from(arg)),
        }
    }
    for crd in gpufed_api::crd::all() {
        let yaml = if no_cel {
            let mut value = serde_json::to_value(&crd)?;
            gpufed_api::crd::strip_cel(&mut value);
            format!("---\n{}", serde_yaml::to_string(&value)?)
        } else {
            gpufed_api::crd::to_yaml(&crd)?
        };
        match &out {
            Some(dir) => std::fs::write(dir.join(gpufed_api::crd::file_name(&crd)), yaml)?,
            None => print!("{yaml}"),
        }
    }
    Ok(())
}
