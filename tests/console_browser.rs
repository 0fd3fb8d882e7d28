//! The web console (`/ui`) in a real browser (headless Chromium through WebDriver) against a
//! real NATS and the real binary: what the pages show, and that their buttons act through the
//! documented API. Each test writes a screenshot of its page to `target/console-screenshots/`.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::bed::TestBed;
use common::browser::Browser;
use common::calls::{bed_with, failing_bed, wait_state};
use common::http::{Recorded, Reply};
use common::worker::{Worker, http_client};

/// Calls that reached `function` (as the call named it: the gateway path `/function/<name>`).
fn calls_to(bed: &TestBed, function: &str) -> usize {
    let path = format!("/function/{function}");
    bed.function
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .count()
}

/// `POST` of an operator's route, as a tool would (no browser).
async fn operate(w: &Worker, path: &str) {
    let resp = http_client()
        .post(format!("{}{path}", w.ingress()))
        .send()
        .await
        .expect("ingress answers");
    assert_eq!(
        resp.status(),
        200,
        "{path}: {}",
        resp.text().await.unwrap_or_default()
    );
}

/// Workers read pauses each second: after this long every one has seen a change.
const PAUSE_SEEN: Duration = Duration::from_secs(3);

/// Pause `function` of queue `q` through the API, and wait until every worker has seen it.
async fn pause_function(w: &Worker, q: &str, function: &str) {
    operate(w, &format!("/system/queues/{q}/pause?function={function}")).await;
    tokio::time::sleep(PAUSE_SEEN).await;
}

/// Accept a call for `function` with call id `id`.
async fn submit(w: &Worker, function: &str, id: &str) {
    let resp = w
        .post(function)
        .header("x-call-id", id)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{id}");
}

/// The text of the overview's row of `function`.
async fn row_text(b: &Browser, function: &str) -> String {
    let script = format!(
        "var a = document.querySelector('span.actions[data-function=\"{function}\"]'); \
         return a ? a.closest('tr').innerText : '';"
    );
    b.run(&script)
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn echo(_: &Recorded, _: usize) -> Reply {
    Reply::ok("ok")
}

#[tokio::test]
async fn the_overview_shows_a_paused_function_and_its_waiting_calls() {
    let Some((bed, w)) = bed_with("ui-overview", echo, &[]).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let q = bed.queue.clone();
    pause_function(&w, &q, "held").await;
    for i in 0..3 {
        submit(&w, "held", &format!("held-{i}")).await;
    }
    submit(&w, "runs", "runs-0").await;
    bed.function.wait_for(1, Duration::from_secs(20)).await;

    b.goto(&format!("{}/ui", w.ingress())).await;
    b.wait_text(&format!("Queue {q}"), Duration::from_secs(10), true)
        .await;
    let held = row_text(&b, "held.openfaas-fn").await;
    let cells: Vec<&str> = held.split('\t').map(str::trim).collect();
    assert_eq!(cells.get(1), Some(&"3"), "3 calls wait: {held:?}");
    assert!(cells.contains(&"paused"), "{held:?}");
    let runs = row_text(&b, "runs.openfaas-fn").await;
    assert!(runs.contains("running"), "{runs:?}");
    let chart = b
        .run("return Array.from(document.querySelectorAll('svg.chart')).map(s => s.getAttribute('aria-label')).join('\\n')")
        .await;
    assert!(
        chart
            .as_str()
            .unwrap_or_default()
            .contains("1 calls and 0 failures"),
        "the chart counts the call that ran: {chart}"
    );
    assert_eq!(b.unlabelled().await, Vec::<String>::new());
    b.screenshot("overview").await;

    // On a phone the page fits the screen's width: only the tables scroll sideways.
    b.resize(390, 844).await;
    b.goto(&format!("{}/ui", w.ingress())).await;
    b.wait_text(&format!("Queue {q}"), Duration::from_secs(10), false)
        .await;
    let overflow = b
        .run("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        .await;
    assert_eq!(overflow.as_i64(), Some(0), "the page is wider than a phone");
    b.screenshot("overview-phone").await;
    assert_eq!(calls_to(&bed, "held"), 0);

    // The whole queue, paused and resumed from the overview.
    let paused = || async {
        let (code, body) = common::calls::json(
            reqwest::Method::GET,
            format!("{}/system/queues/{q}", w.ingress()),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        body["paused"].as_bool()
    };
    b.click(&b.find("button.act[data-url$='/pause']").await)
        .await;
    let asked = b.accept_confirmation().await;
    assert!(asked.contains(&format!("Pause queue {q}?")), "{asked}");
    common::eventually(Duration::from_secs(10), "the queue paused", || async {
        paused().await == Some(true)
    })
    .await;
    b.click(&b.find("button.act[data-url$='/resume']").await)
        .await;
    common::eventually(Duration::from_secs(10), "the queue resumed", || async {
        paused().await == Some(false)
    })
    .await;
}

#[tokio::test]
async fn pausing_and_resuming_a_function_from_its_page_stops_and_restarts_its_calls() {
    let Some((bed, w)) = bed_with("ui-pause", echo, &[]).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let f = "fn.openfaas-fn";
    submit(&w, "fn", "before").await;
    bed.function.wait_for(1, Duration::from_secs(20)).await;

    b.goto(&format!(
        "{}/ui/queues/{}/functions/{f}",
        w.ingress(),
        bed.queue
    ))
    .await;
    b.wait_text("running", Duration::from_secs(10), false).await;
    b.click(&b.find("button.act[data-url*='/pause?function=']").await)
        .await;
    let asked = b.accept_confirmation().await;
    assert!(asked.contains("Pause fn.openfaas-fn?"), "{asked}");
    b.wait_text("paused", Duration::from_secs(10), true).await;
    tokio::time::sleep(PAUSE_SEEN).await;

    for i in 0..2 {
        submit(&w, "fn", &format!("while-paused-{i}")).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(calls_to(&bed, "fn"), 1, "no call starts while paused");
    let page = b
        .wait_text("Waiting\n2", Duration::from_secs(15), true)
        .await;
    assert!(page.contains("paused"), "{page}");
    b.screenshot("function-paused").await;

    b.click(&b.find("button.act[data-url*='/resume?function=']").await)
        .await;
    b.wait_text("running", Duration::from_secs(10), true).await;
    bed.function.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(calls_to(&bed, "fn"), 3, "both held calls ran once resumed");
    let page = b
        .wait_text("while-paused-1", Duration::from_secs(15), true)
        .await;
    let recent = page.split("Recent calls").nth(1).unwrap_or_default();
    assert!(
        recent.contains("while-paused-0") && recent.contains("before"),
        "{recent}"
    );
    assert!(recent.contains("succeeded"), "{recent}");
}

#[tokio::test]
async fn a_dead_letter_found_by_filter_is_redriven_from_the_page_and_runs_again() {
    let Some((bed, w, failing)) = failing_bed("ui-dlq").await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    submit(&w, "breaks", "dl-ui-1").await;
    submit(&w, "other", "dl-ui-2").await;
    bed.wait_dead_letters(2, Duration::from_secs(30)).await;

    b.goto(&format!(
        "{}/ui/dead-letters?queue={}",
        w.ingress(),
        bed.queue
    ))
    .await;
    b.wait_text("dl-ui-2", Duration::from_secs(10), false).await;
    b.type_into(&b.find("#f-function").await, "breaks").await;
    b.click(&b.find("form.filter button[type=submit]").await)
        .await;
    b.wait_url("function=breaks").await;
    let listed = b.wait_text("dl-ui-1", Duration::from_secs(10), false).await;
    assert!(
        !listed.contains("dl-ui-2"),
        "the filter leaves the other out:\n{listed}"
    );
    assert_eq!(b.unlabelled().await, Vec::<String>::new());
    b.screenshot("dead-letters").await;

    failing.store(false, Ordering::SeqCst);
    let before = calls_to(&bed, "breaks");
    b.click(&b.find("button.act[data-counted]").await).await;
    let asked = b.accept_confirmation().await;
    assert!(
        asked.contains("Redrive 1 dead letters matching the filter?"),
        "{asked}"
    );
    let done = wait_state(&w, "dl-ui-1", "succeeded", Duration::from_secs(30)).await;
    assert_eq!(done["function"], "breaks", "{done}");
    assert_eq!(calls_to(&bed, "breaks"), before + 1, "it ran again, once");
    b.wait_text("No dead letter matches.", Duration::from_secs(10), true)
        .await;
    assert_eq!(bed.dead_letter_count().await, 1, "the other stays");

    // The one left, ticked and purged.
    b.goto(&format!(
        "{}/ui/dead-letters?queue={}",
        w.ingress(),
        bed.queue
    ))
    .await;
    b.wait_text("dl-ui-2", Duration::from_secs(10), false).await;
    b.click(&b.find("input[name=seq]").await).await;
    b.click(&b.find("button.act.danger[data-selection]").await)
        .await;
    let asked = b.accept_confirmation().await;
    assert!(asked.contains("Purge 1 selected dead letters?"), "{asked}");
    b.wait_text("No dead letter matches.", Duration::from_secs(10), true)
        .await;
    assert_eq!(bed.dead_letter_count().await, 0);
}

#[tokio::test]
async fn a_call_is_looked_up_and_cancelled_from_the_page() {
    let Some((bed, w)) = bed_with("ui-call", echo, &[]).await else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let q = bed.queue.clone();
    pause_function(&w, &q, "later").await;
    submit(&w, "later", "ui-cancel-1").await;

    b.goto(&format!("{}/ui/calls", w.ingress())).await;
    b.type_into(&b.find("#call-id").await, "ui-cancel-1").await;
    b.click(&b.find("form.filter button[type=submit]").await)
        .await;
    b.wait_url("id=ui-cancel-1").await;
    let shown = b.wait_text("queued", Duration::from_secs(10), false).await;
    assert!(shown.contains("later"), "{shown}");
    b.screenshot("call").await;

    // By keyboard this time.
    b.press_enter(&b.find("button.act[data-method=DELETE]").await)
        .await;
    let asked = b.accept_confirmation().await;
    assert!(asked.contains("Cancel call ui-cancel-1?"), "{asked}");
    b.wait_text("cancelled", Duration::from_secs(10), true)
        .await;
    operate(&w, &format!("/system/queues/{q}/resume?function=later")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(calls_to(&bed, "later"), 0, "a cancelled call never runs");
    assert!(
        b.find_all("button.act[data-method=DELETE]")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn the_console_is_behind_the_credentials_and_refuses_other_sites() {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("basic-auth-user"), "admin\n").unwrap();
    std::fs::write(secrets.path().join("basic-auth-password"), "secret\n").unwrap();
    let dir = secrets.path().to_str().unwrap();
    let envs = [("basic_auth", "true"), ("secret_mount_path", dir)];
    let Some((bed, w)) = bed_with("ui-auth", echo, &envs).await else {
        return;
    };
    let http = http_client();
    let ui = format!("{}/ui", w.ingress());
    let open = http.get(&ui).send().await.unwrap();
    assert_eq!(open.status(), 401, "no page without credentials");
    let page = http
        .get(&ui)
        .basic_auth("admin", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        page.text()
            .await
            .unwrap()
            .contains(&format!("Queue {}", bed.queue))
    );

    let pause = format!("{}/system/queues/{}/pause", w.ingress(), bed.queue);
    let forged = http
        .post(&pause)
        .basic_auth("admin", Some("secret"))
        .header("origin", "https://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        403,
        "another site's page may not pause the queue"
    );
    let fetched = http
        .post(&pause)
        .basic_auth("admin", Some("secret"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200, "the console's own call pauses it");
}
