//! Writes the gpufed CRDs as YAML: into the directory given as the only argument
//! (one file per kind), or to standard output when there is none.
#![forbid(unsafe_code)]

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args_os().nth(1).map(PathBuf::from);
    for crd in gpufed_api::crd::all() {
        let yaml = gpufed_api::crd::to_yaml(&crd)?;
        match &out {
            Some(dir) => std::fs::write(dir.join(gpufed_api::crd::file_name(&crd)), yaml)?,
            None => print!("{yaml}"),
        }
    }
    Ok(())
}
