//! End-to-end tests of the `herd` binary: real files in, real output and exit codes out.
//!
//! The Llama 3 tokenizer is made the way a user makes it — `herd tokenizer import` on Meta's
//! `tokenizer.model` (fetched by `bash dev/fetch-llama3-tokenizer.sh`) — once per test binary.

#![expect(clippy::expect_used, reason = "test helpers stop at the first failure")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn herd(arguments: &[&str]) -> Output {
    herd_with_input(arguments, None)
}

fn herd_with_input(arguments: &[&str], input: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(arguments)
        .current_dir(repository())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herd runs");
    if let Some(input) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    child.wait_with_output().expect("herd finishes")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Meta's tokenizer imported with `herd tokenizer import`, into a directory kept for the run.
fn llama3_tokenizer_json() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let model = std::env::var_os("HERD_LLAMA3_TOKENIZER_MODEL").map_or_else(
            || repository().join(".cache/llama3/tokenizer.model"),
            PathBuf::from,
        );
        assert!(
            model.is_file(),
            "{} is missing: run `bash dev/fetch-llama3-tokenizer.sh`",
            model.display()
        );
        let directory = tempfile::tempdir().expect("temp dir").keep();
        let out = directory.join("tokenizer.json");
        let output = herd(&[
            "tokenizer",
            "import",
            model.to_str().expect("utf-8 path"),
            "--out",
            out.to_str().expect("utf-8 path"),
        ]);
        assert!(
            output.status.success(),
            "import failed: {}",
            text(&output.stderr)
        );
        out
    })
}

fn write_file(directory: &Path, name: &str, bytes: &[u8]) -> String {
    let path = directory.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn validate_reports_every_problem_with_file_line_and_field() {
    let directory = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(br#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#);
    bytes.extend_from_slice(b"\n{\"messages\": [\n");
    bytes.extend_from_slice(b"{\"messages\": [{\"role\": \"user\", \"content\": \"caf\xe9\"}]}\n");
    bytes.extend_from_slice(br#"{"messages": [{"role": "robot", "content": "x"}, {"role": "user", "content": "y"}, {"role": "tool", "content": "42"}]}"#);
    bytes.extend_from_slice(b"\n");
    bytes.extend_from_slice(br#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}"#);
    bytes.extend_from_slice(b"\n\n");
    bytes.extend_from_slice(br#"{"messages": [{"role": "user", "content": "no answer"}]}"#);
    bytes.extend_from_slice(b"\n");
    let file = write_file(directory.path(), "bad.jsonl", &bytes);

    let output = herd(&["data", "validate", &file]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let expected_starts = [
        format!("{file}:2: malformed JSON"),
        format!("{file}:3: invalid UTF-8 at byte"),
        format!("{file}:4: messages[0].role: unknown role \"robot\""),
        format!("{file}:4: messages[2]: a tool result (ipython) must directly follow"),
        format!(
            "{file}:5: messages[1].tool_calls[0].function.arguments: arguments string is not valid JSON"
        ),
        format!("{file}:7: messages: no assistant message"),
    ];
    assert_eq!(lines.len(), expected_starts.len(), "{stdout}");
    for (line, start) in lines.iter().zip(&expected_starts) {
        assert!(
            line.starts_with(start.as_str()),
            "{line:?} should start with {start:?}"
        );
    }
    assert!(
        text(&output.stderr).contains("6 lines, 1 conversations, 0 preferences, 5 invalid lines")
    );
}

#[test]
fn the_shipped_samples_are_valid() {
    let tokenizer = llama3_tokenizer_json().to_str().unwrap();
    let output = herd(&[
        "data",
        "validate",
        "data/samples/conversations.jsonl",
        "data/samples/preferences.jsonl",
        "--tokenizer",
        tokenizer,
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let summaries: Vec<Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(summaries[0]["conversations"].as_u64().unwrap() >= 30);
    assert!(summaries[1]["preferences"].as_u64().unwrap() >= 15);
}

#[test]
fn render_ids_equal_the_llama_models_fixture() {
    let tokenizer = llama3_tokenizer_json().to_str().unwrap();
    let fixture: Value = serde_json::from_str(include_str!(
        "../datasets/tests/fixtures/llama3_protocol.json"
    ))
    .unwrap();
    let cases: Vec<&Value> = fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|case| case["name"] != "empty_dialogue")
        .collect();
    let input: String = cases
        .iter()
        .map(|case| serde_json::json!({"messages": case["messages"]}).to_string() + "\n")
        .collect();
    let output = herd_with_input(
        &[
            "data",
            "render",
            "--ids",
            "--train-on",
            "all-turns",
            "--tokenizer",
            tokenizer,
            "-",
        ],
        Some(input.as_bytes()),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let rendered: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rendered.len(), cases.len());
    for (case, line) in cases.iter().zip(&rendered) {
        assert_eq!(line["ids"], case["ids"], "{}", case["name"]);
        let length = line["ids"].as_array().unwrap().len();
        assert_eq!(line["mask"].as_array().unwrap().len(), length);
        assert_eq!(line["dpo_mask"].as_array().unwrap().len(), length);
        assert_eq!(line["length"], length);
    }
}

#[test]
fn render_text_and_generation_prompt() {
    let input = br#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|eot_id|>"}]}"#;
    let output = herd_with_input(&["data", "render", "--generation-prompt", "-"], Some(input));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi <|eot_id|><|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n\n"
    );
}

#[test]
fn preferences_render_chosen_and_rejected_with_completion_masks() {
    let tokenizer = llama3_tokenizer_json().to_str().unwrap();
    let input = br#"{"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}], "strength": "better"}"#;
    let output = herd_with_input(
        &["data", "render", "--ids", "--tokenizer", tokenizer, "-"],
        Some(input),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let line: Value = serde_json::from_str(text(&output.stdout).trim()).unwrap();
    // <|begin_of_text|> header(user) "2+2?" <|eot_id|> header(assistant) "4" <|eot_id|>
    let chosen_ids: Vec<u64> = line["chosen"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().unwrap())
        .collect();
    let mask: Vec<u64> = line["chosen"]["mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bit| bit.as_u64().unwrap())
        .collect();
    let dpo_mask: Vec<u64> = line["chosen"]["dpo_mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bit| bit.as_u64().unwrap())
        .collect();
    let n = chosen_ids.len();
    assert_eq!(chosen_ids[n - 1], 128_009);
    assert_eq!(
        &mask[n - 2..],
        [1, 1],
        "the answer and its <|eot_id|> are trained"
    );
    assert_eq!(
        mask[..n - 2].iter().sum::<u64>(),
        0,
        "nothing in the prompt is trained"
    );
    assert_eq!(&dpo_mask[n - 2..], [1, 0], "DPO leaves <|eot_id|> out");
    assert_ne!(line["chosen"]["ids"], line["rejected"]["ids"]);
}

#[test]
fn too_long_is_an_error_or_a_counted_skip() {
    let tokenizer = llama3_tokenizer_json().to_str().unwrap();
    let input = b"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n\
{\"messages\": [{\"role\": \"user\", \"content\": \"one two three four five six seven eight nine ten\"}, {\"role\": \"assistant\", \"content\": \"ok\"}]}\n\
{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}\n";
    let arguments = [
        "data",
        "render",
        "--ids",
        "--tokenizer",
        tokenizer,
        "--max-length",
        "20",
        "-",
    ];
    let output = herd_with_input(&arguments, Some(input));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("-:2: messages is 22 tokens, over the limit of 20"),
        "{stderr}"
    );
    assert_eq!(
        text(&output.stdout).lines().count(),
        1,
        "the line before the error is kept"
    );

    let mut skipping = arguments.to_vec();
    skipping.insert(2, "--skip-invalid");
    let output = herd_with_input(&skipping, Some(input));
    assert!(output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("-:3: messages[0].role: unknown role \"wizard\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("rendered 1 records, skipped 2 invalid lines"),
        "{stderr}"
    );
}

#[test]
fn stats_count_and_measure() {
    let tokenizer = llama3_tokenizer_json().to_str().unwrap();
    let output = herd(&[
        "data",
        "stats",
        "data/samples/conversations.jsonl",
        "--tokenizer",
        tokenizer,
        "--max-length",
        "256",
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stats: Value = serde_json::from_str(&text(&output.stdout)).unwrap();
    let conversations = stats["conversations"].as_u64().unwrap();
    assert_eq!(stats["sequences"].as_u64().unwrap(), conversations);
    let histogram_total: u64 = stats["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bucket| bucket["count"].as_u64().unwrap())
        .sum();
    assert_eq!(histogram_total, conversations);
    let over = stats["truncation"][0]["sequences_over"].as_u64().unwrap();
    assert!(
        over > 0 && over < conversations,
        "{over} of {conversations} over 256 tokens"
    );
    assert!(stats["trained_tokens"].as_u64().unwrap() < stats["total_tokens"].as_u64().unwrap());

    let table = herd(&[
        "data",
        "stats",
        "data/samples/conversations.jsonl",
        "--tokenizer",
        tokenizer,
        "--max-length",
        "256",
    ]);
    let table = text(&table.stdout);
    assert!(table.contains("histogram"), "{table}");
    assert!(
        table.contains(&format!(
            "max length 256    would cut {over} of {conversations} sequences"
        )),
        "{table}"
    );
}

#[test]
fn tokenizer_train_then_render_with_it() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("tokenizer.json");
    let output = herd(&[
        "tokenizer",
        "train",
        "--corpus",
        "data/samples/conversations.jsonl",
        "--vocab-size",
        "600",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let input = r#"{"messages": [{"role": "user", "content": "Bonjour 👋"}, {"role": "assistant", "content": "Salut !"}]}"#;
    let output = herd_with_input(
        &[
            "data",
            "render",
            "--ids",
            "--tokenizer",
            out.to_str().unwrap(),
            "-",
        ],
        Some(input.as_bytes()),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let line: Value = serde_json::from_str(text(&output.stdout).trim()).unwrap();
    let ids = line["ids"].as_array().unwrap();
    // The specials follow the 600 base tokens, in Meta's order: <|begin_of_text|> is 600.
    assert_eq!(ids[0], 600);
    assert_eq!(ids[ids.len() - 1], 600 + 9, "<|eot_id|>");
}

#[test]
fn tokenizer_import_names_the_bad_line() {
    let directory = tempfile::tempdir().unwrap();
    let model = write_file(
        directory.path(),
        "tokenizer.model",
        b"IQ== 0\nIg== 1\nnot-base64!! 2\n",
    );
    let out = directory.path().join("tokenizer.json");
    let output = herd(&[
        "tokenizer",
        "import",
        &model,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&format!("{model}:3")), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn a_missing_file_is_named() {
    let output = herd(&["data", "validate", "no/such/file.jsonl"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("cannot open no/such/file.jsonl"));
}

/// On a build without the `cuda` feature, every way of asking for the GPU — a command's
/// `--device cuda`, a round config's `device = "cuda"` — is an error that names the setting to
/// change, raised before any stage starts or any output is written.
#[cfg(not(feature = "cuda"))]
#[test]
fn asking_for_cuda_on_a_cpu_build_names_the_setting() {
    let directory = tempfile::tempdir().unwrap();
    let missing_model = directory.path().join("no-model");
    let missing_model = missing_model.to_str().unwrap();
    let prompts = write_file(
        directory.path(),
        "prompts.jsonl",
        b"{\"text\": \"1 + 1 =\"}\n",
    );
    let out = directory.path().join("out.jsonl");
    let demo_out = directory.path().join("demo");
    let round_out = format!("output_dir={:?}", directory.path().join("round"));
    let commands: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "generate",
                "--model",
                missing_model,
                "--input",
                &prompts,
                "--output",
                out.to_str().unwrap(),
                "--device",
                "cuda",
            ],
            "--device = cuda",
        ),
        (
            vec![
                "demo",
                "--short",
                "--out",
                demo_out.to_str().unwrap(),
                "--device",
                "cuda",
            ],
            "--device = cuda",
        ),
        (
            vec![
                "round",
                "--config",
                "configs/round-tiny.toml",
                "--set",
                "device=\"cuda\"",
                "--set",
                &round_out,
            ],
            "device = cuda",
        ),
    ];
    for (arguments, named) in commands {
        let output = herd(&arguments);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "herd {arguments:?} succeeded");
        assert!(
            stderr.contains(named) && stderr.contains("--features cuda"),
            "herd {arguments:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(!out.exists() && !demo_out.exists());
    assert!(!directory.path().join("round").exists());
}
