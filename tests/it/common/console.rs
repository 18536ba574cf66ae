//! The console as a browser uses it over HTTP: a signed-in session, its CSRF token, forms posted
//! from this origin.

use super::TestApp;

/// A signed-in browser: its session cookie and the forms' CSRF token.
pub struct Console {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: String,
    pub csrf: String,
}

impl Console {
    pub async fn sign_in(app: &TestApp, key: &str) -> Console {
        let cookie = app.sign_in(key).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut console = Console {
            http,
            base: app.url(""),
            cookie,
            csrf: String::new(),
        };
        let (status, page) = console.get("/").await;
        assert_eq!(status, 200);
        console.csrf = csrf_of(&page);
        console
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Posts a form with this session's token from this origin; answers the status, the
    /// redirect's target and the body.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
        let mut all: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        all.extend_from_slice(fields);
        self.post_raw(path, &all, Some(&self.base)).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        origin: Option<&str>,
    ) -> (u16, String, String) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap());
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        let r = request.send().await.unwrap();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (r.status().as_u16(), location, r.text().await.unwrap())
    }

    pub async fn upload(&self, file: String) -> (u16, String) {
        // multipart/form-data as a browser sends the upload form.
        let boundary = "----console-test-boundary-7f3a";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"batch.csv\"\r\n\
             Content-Type: text/csv\r\n\r\n{file}\r\n--{boundary}--\r\n",
            self.csrf
        );
        let r = self
            .http
            .post(format!("{}/requests/upload", self.base))
            .header("Cookie", &self.cookie)
            .header("Origin", &self.base)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

pub fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF token in {page}"));
    let rest = &page[at + 19..];
    rest[..rest.find('"').unwrap()].to_string()
}
