//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `setup`: provision ONNX Runtime from the pinned `onnxruntime` wheel on
//!   PyPI into `.clipql/onnxruntime/` (needs only python3 and pip);
//! - `demo`: set up, then classify the fixture photos with the fixture model;
//! - `test`: set up, then run every test and every example;
//! - `lint`: rustfmt, clippy and rustdoc with warnings denied;
//! - `bench`: everything `BENCHMARKS.md` reports, from nothing: a Python
//!   environment from PyPI (`bench/requirements.txt`), the full-size random
//!   ViT-B/32, a release build of `clipql`, the workloads and every
//!   contender (`bench/compare.py`). Arguments after `--` go to compare.py;
//! - `fuzz [TARGET] [SECONDS]`: the cargo-fuzz targets under `tests/fuzz/`
//!   (both by default, 600 s each), on the nightly toolchain, installing
//!   `cargo-fuzz` from crates.io if it is missing.
//!
//! Only the standard library is used, so this builds in seconds on a fresh
//! machine before anything else.

mod imports;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Must match `clip_runtime::onnxruntime::PINNED_ONNXRUNTIME_VERSION`.
const ONNXRUNTIME_VERSION: &str = "1.32.0";
const PROVISIONED_DIR: &str = ".clipql/onnxruntime";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn cargo() -> Command {
    without_package_env(Command::new(
        std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
    ))
}

/// `cargo +nightly …` through rustup's proxy, for `fuzz`.
fn cargo_nightly() -> Command {
    let mut c = without_package_env(Command::new("cargo"));
    c.arg("+nightly");
    c
}

fn without_package_env(mut c: Command) -> Command {
    c.current_dir(root());
    // `cargo run` gives xtask the variables of its own package. Passed on,
    // they differ from a plain shell's, and build scripts that watch them
    // (ring's) rerun, rebuilding half the tree: the nested cargo must see
    // what `cargo build` from the shell sees.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key.as_ref(),
                "CARGO_MANIFEST_DIR" | "CARGO_MANIFEST_PATH" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            c.env_remove(key.as_ref());
        }
    }
    c
}

fn library_path() -> PathBuf {
    root()
        .join(PROVISIONED_DIR)
        .join(format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"))
}

/// Downloads the pinned wheel with pip and unpacks the shared library.
fn setup() -> Result<(), String> {
    let lib = library_path();
    if lib.is_file() {
        eprintln!(
            "xtask: ONNX Runtime {ONNXRUNTIME_VERSION} already at {}",
            lib.display()
        );
        return Ok(());
    }
    let dir = root().join(PROVISIONED_DIR);
    let wheels = root().join(".clipql/wheels");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "-d",
        ])
        .arg(&wheels)
        .arg(format!("onnxruntime=={ONNXRUNTIME_VERSION}")))
    .map_err(|e| {
        format!(
            "{e}\nxtask: fetching the onnxruntime wheel needs python3 with pip and access to PyPI"
        )
    })?;
    // A wheel is a zip; python's zipfile saves a dependency here.
    let script = format!(
        r#"
import glob, os, sys, zipfile
wheel = sorted(glob.glob(os.path.join(sys.argv[1], "onnxruntime-{v}-*.whl")))[-1]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if os.path.basename(n).startswith("libonnxruntime.so")]
    if not names:
        sys.exit("no libonnxruntime.so in " + wheel)
    for n in names:
        target = os.path.join(sys.argv[2], os.path.basename(n))
        with z.open(n) as src, open(target + ".part", "wb") as dst:
            dst.write(src.read())
        os.replace(target + ".part", target)
        print("xtask: unpacked", target)
"#,
        v = ONNXRUNTIME_VERSION
    );
    run(Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&wheels)
        .arg(&dir))?;
    if lib.is_file() {
        Ok(())
    } else {
        Err(format!("the wheel did not contain {}", lib.display()))
    }
}

/// The main job: `clipql classify` over the fixture photos, with the default
/// model (Xenova/clip-vit-base-patch32) pulled from the HF hub. Where the hub
/// is unreachable, the pull fails at once and says why; the demo then runs
/// the same job with the committed fixture model, and says so.
fn demo() -> Result<(), String> {
    setup()?;
    let clipql = |args: &[&str]| {
        let mut c = cargo();
        c.args(["run", "--quiet", "--package", "clipql", "--"])
            .args(args);
        c
    };
    let mut classify = vec![
        "classify",
        "tests/fixtures/photos/",
        "--template",
        "a photo of a {}",
        "--labels",
        "cat",
        "dog",
        "rocket",
        "cup of coffee",
        "page of text",
        "--top-k",
        "2",
    ];
    let pulled = clipql(&["model", "pull", "Xenova/clip-vit-base-patch32"])
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if !pulled {
        eprintln!(
            "xtask: the default model could not be pulled (see above); classifying with the \
             committed fixture model instead (tiny, random weights: the labels are not \
             meaningful, the pipeline is real)"
        );
        classify.extend(["--model", "tests/fixtures/model"]);
    }
    // Exit code 3 (some images failed, output written) is part of the demo:
    // the fixture photos include none that fail, so any failure is real.
    run(&mut clipql(&classify))
}

fn test() -> Result<(), String> {
    setup()?;
    // The SQL tests expect no default model: give them an empty HF cache
    // rather than whatever this machine has in ~/.cache/huggingface.
    let empty_cache = root().join("target/xtask-empty-hf-cache");
    std::fs::create_dir_all(&empty_cache).map_err(|e| e.to_string())?;
    // A fresh ClipQL cache too, so every run measures logit_scale with the
    // probe (and tests it) instead of remembering an earlier run's value.
    let clipql_cache = root().join("target/xtask-clipql-cache");
    match std::fs::remove_dir_all(&clipql_cache) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.to_string()),
        _ => {}
    }
    run(cargo()
        .args(["test", "--workspace", "--all-targets"])
        .env("HF_HUB_CACHE", &empty_cache)
        .env("HF_HUB_OFFLINE", "1")
        .env("CLIPQL_CACHE_DIR", &clipql_cache))?;
    run(cargo()
        .args(["test", "--workspace", "--doc"])
        .env("CLIPQL_CACHE_DIR", &clipql_cache))?;
    Ok(())
}

const BENCH_MODEL: &str = ".clipql/models/clip-vit-base-patch32-random";

/// The Python that runs the benchmark: `CLIPQL_BENCH_PYTHON` if set (an
/// environment that already has `bench/requirements.txt`), else
/// `.clipql/bench-venv`, created and filled from PyPI on first use.
fn bench_python() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("CLIPQL_BENCH_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = root().join(".clipql/bench-venv");
    let python = venv.join("bin/python");
    let requirements = root().join("bench/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).map_err(|e| e.to_string())?;
    let stamp = venv.join("clipql-requirements.txt");
    if python.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    let system = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(&system).args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(&requirements))
    .map_err(|e| {
        format!(
            "{e}\nxtask: the benchmark needs PyPI for {}",
            requirements.display()
        )
    })?;
    std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
    Ok(python)
}

fn bench(args: &[String]) -> Result<(), String> {
    setup()?;
    let python = bench_python()?;
    let model = root().join(BENCH_MODEL);
    if !model.join("torch/model.safetensors").is_file() {
        eprintln!(
            "xtask: generating the full-size random ViT-B/32 (a few minutes, ~4 GB of memory)"
        );
        run(Command::new(&python)
            .arg(root().join("tests/fixtures/generate.py"))
            .arg("--full")
            .arg(&model))?;
    }
    // One release target dir for benchmarks: rebuilds are incremental.
    run(cargo().args(["build", "--release", "--package", "clipql"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let mut command = "cargo xtask bench".to_string();
    if !args.is_empty() {
        command = format!("{command} -- {}", args.join(" "));
    }
    run(Command::new(&python)
        .current_dir(root())
        // A release binary does not look in the checkout for its library.
        .env("ORT_DYLIB_PATH", library_path())
        .arg(root().join("bench/compare.py"))
        .arg("bench")
        .arg("--clipql")
        .arg(target.join("release/clipql"))
        .arg("--model")
        .arg(&model)
        .arg("--command")
        .arg(command)
        .args(args))
}

fn lint() -> Result<(), String> {
    let found = imports::workspace_loops();
    if !found.is_empty() {
        return Err(format!(
            "modules that import each other: {}; move what both need into a module of \
             its own (see docs/ARCHITECTURE.md)",
            found.join("; ")
        ));
    }
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo()
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings"))
}

/// The cargo-fuzz targets (`tests/fuzz/fuzz_targets/`).
const FUZZ_TARGETS: [&str; 2] = ["decode_preprocess", "udf_binary"];

fn fuzz(args: &[String]) -> Result<(), String> {
    setup()?;
    let has_cargo_fuzz = cargo_nightly()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_fuzz {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let targets: Vec<&str> = match args.first() {
        Some(t) if FUZZ_TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => {
            return Err(format!(
                "unknown fuzz target {t}; the targets are {}",
                FUZZ_TARGETS.join(", ")
            ));
        }
        None => FUZZ_TARGETS.to_vec(),
    };
    let seconds = args.get(1).map_or("600", String::as_str);
    for target in targets {
        // The committed corpus (minimised), seeded with the bad-input corpus.
        let corpus = root().join("tests/fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
        run(cargo_nightly()
            .args(["fuzz", "run", "--fuzz-dir", "tests/fuzz", target])
            .arg(&corpus)
            .arg(root().join("tests/fixtures/corpus"))
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=4096",
                "-timeout=30",
            ]))?;
        run(cargo_nightly()
            .args(["fuzz", "cmin", "--fuzz-dir", "tests/fuzz", target])
            .arg(&corpus))?;
        keep_small_inputs(&corpus)?;
    }
    Ok(())
}

/// Inputs up to this size stay in the committed fuzz corpus; larger ones
/// (mostly mutations of the seed photos, which every run re-reads from
/// `tests/fixtures/corpus`) would make it tens of MB.
const FUZZ_KEEP_BYTES: u64 = 4096;

fn keep_small_inputs(corpus: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(corpus).map_err(|e| e.to_string())?;
    let (mut kept, mut dropped) = (0, 0);
    for entry in entries.flatten() {
        let big = entry.metadata().map_err(|e| e.to_string())?.len() > FUZZ_KEEP_BYTES;
        if big {
            std::fs::remove_file(entry.path()).map_err(|e| e.to_string())?;
            dropped += 1;
        } else {
            kept += 1;
        }
    }
    eprintln!(
        "xtask: {}: kept {kept} minimised inputs of up to {FUZZ_KEEP_BYTES} bytes, dropped {dropped} larger ones",
        corpus.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let rest: Vec<String> = std::env::args().skip(2).skip_while(|a| a == "--").collect();
    let result = match task.as_str() {
        "setup" => setup(),
        "demo" => demo(),
        "test" => test(),
        "lint" => lint(),
        "bench" => bench(&rest),
        "fuzz" => fuzz(&rest),
        _ => Err(
            "usage: cargo xtask <setup|demo|test|lint|bench [-- compare.py options]|fuzz [TARGET] [SECONDS]>".to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
