//! Embeds the ops console (`console/public/`, SPEC 9) in the binary: writes a table of
//! every file there, each with its bytes, to `$OUT_DIR/console_assets.rs`, so that the
//! binary alone serves a working console, with no network and no files beside it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const ASSETS: &str = "console/public";

fn main() {
    println!("cargo::rerun-if-changed={ASSETS}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(ASSETS);
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    assert!(
        files.iter().any(|file| file == &root.join("index.html")),
        "{ASSETS}/index.html is missing: the console cannot be built into the binary"
    );

    let mut table = String::from("&[\n");
    for file in &files {
        let relative = file
            .strip_prefix(&root)
            .expect("a collected file is under the assets folder");
        let url_path = relative
            .components()
            .map(|part| part.as_os_str().to_str().expect("asset names are UTF-8"))
            .collect::<Vec<_>>()
            .join("/");
        // Each directory is watched, each file too, so an edit rebuilds the table.
        println!("cargo::rerun-if-changed={}", file.display());
        writeln!(
            table,
            "    ({url_path:?}, include_bytes!({:?}) as &[u8]),",
            file.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    table.push(']');

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("console_assets.rs"), table).expect("OUT_DIR is writable");
}

/// Every regular file under `dir`, depth first; hidden files (editor swap files, `.DS_Store`)
/// are left out.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("the assets folder is readable");
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            println!("cargo::rerun-if-changed={}", path.display());
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
