//! The launch (IMS Security Framework §5.1.3, LTI Core §5): the platform
//! posts the id_token; labpool verifies it, proves the browser is the one
//! that started the login, finds the course and, in one transaction, uses
//! the login up and claims a VM (or queues the launch for one).

use std::sync::Arc;

use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::catalog::LaunchableCourse;
use super::deep_link::Picker;
use super::placement::PLACEMENT_PARAM;
use super::verify::{Launch, LaunchClaims};
use super::{COURSE_PARAM, Lti, Refusal, secs};
use crate::metrics::Outcome;
use crate::store::{LaunchOutcome, LaunchRequest, LoginMatch, SessionKey, WaitOutcome};

/// The launch form post (`response_mode=form_post`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LaunchForm {
    pub id_token: Option<String>,
    pub state: Option<String>,
    /// An OIDC error response instead of a token.
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// Sent back by platforms that offer storage (client-side postMessages).
    pub lti_storage_target: Option<String>,
    /// Our second post, after the page read the platform's storage.
    pub storage_secret: Option<String>,
}

/// What a launch leads to.
#[derive(Debug, Clone)]
pub enum LaunchResult {
    /// To the session's terminal page, with a one-time code the page
    /// trades for its session token.
    Session {
        session_id: String,
        code: String,
        resumed: bool,
        course: String,
    },
    /// No warm VM: to the waiting page, with the pass it polls with.
    Waiting {
        ticket: String,
        pass: String,
        course: String,
    },
    /// The course is at its max.
    Full { title: String },
    /// The user holds as many labs as the course or labpool allows.
    UserLimit(Box<UserLimit>),
    /// Nothing says which course this link opens.
    NeedsCourse(Box<NeedsCourse>),
    /// An instructor choosing a course (Deep Linking).
    DeepLinking(Box<Picker>),
    /// The browser kept no cookie: prove it through the platform's storage.
    StorageCheck {
        target: String,
        state: String,
        id_token: String,
        platform_origin: String,
    },
}

/// Why [`Lti::resolve`] found no course to open.
enum Unresolved {
    /// Nothing names one: the instructor is told what to set up.
    Needs(Box<NeedsCourse>),
    /// The link names a course this launch may not open.
    Refused(Refusal),
}

/// The user already holds as many labs as allowed.
#[derive(Debug, Clone)]
pub struct UserLimit {
    /// The course launched.
    pub title: String,
    /// Titles of the courses whose labs the user holds (live or waiting).
    pub held: Vec<String>,
    /// Back to the LMS (`launch_presentation.return_url`), if it gave one.
    pub return_url: Option<String>,
}

/// What the instructor must configure, shown when a launch has no course.
#[derive(Debug, Clone)]
pub struct NeedsCourse {
    pub issuer: String,
    pub context_id: Option<String>,
    pub context_title: Option<String>,
    /// A course the link names that labpool does not offer.
    pub named: Option<String>,
    pub instructor: bool,
    pub courses: Vec<String>,
}

/// A waiting page's view of its launch.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum WaitStatus {
    Ready {
        url: String,
    },
    Waiting {
        ahead: i64,
        booting: i64,
        /// Why the pool is not growing, when it is stuck.
        problem: Option<String>,
    },
    /// The ticket lapsed or the course went away: launch again.
    Gone,
    /// The poll did not carry this ticket's pass: another browser than the
    /// one the launch redirected here.
    Refused,
}

impl Lti {
    pub async fn launch(
        &self,
        form: LaunchForm,
        state_cookie: Option<&str>,
        now: i64,
    ) -> Result<LaunchResult, Refusal> {
        if let Some(error) = &form.error {
            return Err(Refusal::bad_launch(format!(
                "the LMS answered with an error instead of a launch: {error}{}",
                form.error_description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )));
        }
        let id_token = form
            .id_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Refusal::bad_launch("the launch carries no id_token"))?;
        let state = form
            .state
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Refusal::state("the launch carries no state"))?;
        let launch = self.verify(&id_token, secs(now)).await?;

        // The browser posting this must be the one that started the login:
        // otherwise anyone could make a student's browser open their own
        // launch (login CSRF).
        match state_cookie {
            Some(cookie) if bool::from(cookie.as_bytes().ct_eq(state.as_bytes())) => {}
            Some(_) => return Err(Refusal::state("the state cookie does not match the launch")),
            None => match (&form.storage_secret, &form.lti_storage_target) {
                (Some(secret), _) => {
                    let login = self.store.login(&state).await?;
                    let stored = login.as_ref().and_then(|l| l.storage_secret.as_deref());
                    if !stored.is_some_and(|s| bool::from(s.as_bytes().ct_eq(secret.as_bytes()))) {
                        return Err(Refusal::state(
                            "the value in the platform's storage does not match this login",
                        ));
                    }
                }
                (None, Some(target)) => {
                    let platform_origin =
                        url::Url::parse(&launch.registration.platform.auth_login_url)
                            .map(|u| u.origin().ascii_serialization())
                            .unwrap_or_default();
                    return Ok(LaunchResult::StorageCheck {
                        target: target.clone(),
                        state,
                        id_token,
                        platform_origin,
                    });
                }
                (None, None) => {
                    // Blackboard Learn names the storage frame at login only:
                    // the login remembers it.
                    let remembered = self
                        .store
                        .login(&state)
                        .await?
                        .and_then(|l| l.storage_target);
                    let Some(target) = remembered else {
                        return Err(self.missing_cookie(&state).await);
                    };
                    let platform_origin =
                        url::Url::parse(&launch.registration.platform.auth_login_url)
                            .map(|u| u.origin().ascii_serialization())
                            .unwrap_or_default();
                    return Ok(LaunchResult::StorageCheck {
                        target,
                        state,
                        id_token,
                        platform_origin,
                    });
                }
            },
        }

        let claims = &launch.claims;
        let login = LoginMatch {
            state: &state,
            nonce: claims.nonce.as_deref().unwrap_or_default(),
            issuer: &launch.registration.platform.issuer,
            client_id: &launch.registration.platform.client_id,
            deployment_id: claims.deployment(),
        };
        self.registry
            .learn_deployment(&launch.registration, claims.deployment())
            .await?;

        if claims.is_deep_linking() {
            self.use_login(login, now).await?;
            // The picker places labs that every student of the LMS course
            // may then launch: only people who build the course may choose.
            if !super::roles::may_place(claims) {
                return Err(Refusal::role(
                    "a Deep Linking request needs an instructor, content developer or \
                     administrator role; this launch has none",
                ));
            }
            return Ok(LaunchResult::DeepLinking(Box::new(
                self.picker(&launch, now).await?,
            )));
        }

        let catalog = self.catalog.get().await?;
        let course = match self.resolve(&catalog, &launch) {
            Ok(course) => course.clone(),
            Err(unresolved) => {
                // The course may be gone from the catalog (removed, still
                // draining) while this very key (user, context, link) holds
                // a live session: that comes back, whatever the catalog
                // says now. Otherwise refused as before; the login is used
                // up either way, so the same id_token cannot be posted again.
                if let Some(back) = self.resume_only(&launch, login, &catalog, now).await? {
                    return Ok(back);
                }
                return match unresolved {
                    Unresolved::Needs(needs) => {
                        self.metrics.refused("no-course");
                        tracing::Span::current().record("outcome", Outcome::Refused.as_str());
                        tracing::warn!(issuer = %launch.registration.platform.issuer,
                            context = ?needs.context_id, named = ?needs.named,
                            "launch refused: no course configured for this link");
                        Ok(LaunchResult::NeedsCourse(needs))
                    }
                    Unresolved::Refused(refusal) => Err(refusal),
                };
            }
        };
        // The course name is from the course files, the session id is
        // labpool's: both safe for logs and the launch span.
        tracing::Span::current().record("course", course.name.as_str());
        let key = session_key(&launch);
        let request = LaunchRequest {
            state: state.clone(),
            nonce: login.nonce.to_owned(),
            issuer: login.issuer.to_owned(),
            client_id: login.client_id.to_owned(),
            course: course.name.clone(),
            spec_hash: course.spec_hash.clone(),
            key,
            max: course.max,
            expiry_ms: course.expiry_ms,
            per_user: course.per_user,
            labs_per_user: self.labs_per_user,
            resume_only: false,
        };
        let outcome = self
            .launches
            .decide(request)
            .await
            .map_err(Refusal::internal)?;
        match outcome {
            LaunchOutcome::LoginRejected => Err(self.login_refusal(login, now).await),
            LaunchOutcome::Claimed(claimed) => {
                if !claimed.resumed {
                    (self.on_demand)();
                }
                let outcome = if claimed.resumed {
                    Outcome::Resumed
                } else {
                    Outcome::Warm
                };
                self.decided(&course.name, outcome);
                tracing::Span::current().record("session", claimed.session.id.as_str());
                tracing::info!(vm = %claimed.vm.id, resumed = claimed.resumed, "launch");
                Ok(LaunchResult::Session {
                    code: self.tokens.issue_code(&claimed.session.id, secs(now)),
                    session_id: claimed.session.id,
                    resumed: claimed.resumed,
                    course: course.title.clone(),
                })
            }
            LaunchOutcome::Waiting(ticket) => {
                (self.on_demand)();
                self.decided(&course.name, Outcome::OnDemand);
                // Neither the ticket nor its pass is logged: together they
                // poll for the session.
                tracing::info!("launch waits: no warm VM");
                Ok(LaunchResult::Waiting {
                    pass: self.tokens.wait_pass(&ticket.id, secs(now)),
                    ticket: ticket.id,
                    course: course.title.clone(),
                })
            }
            LaunchOutcome::UserLimit { held } => {
                self.metrics.refused("user-limit");
                tracing::Span::current().record("outcome", Outcome::Refused.as_str());
                // Course names only: the user's id stays out of the log.
                tracing::warn!(held = ?held, per_course = course.per_user,
                    per_user = self.labs_per_user,
                    "launch refused: the user already holds as many labs as allowed");
                let title = |name: &String| {
                    catalog
                        .course(name)
                        .map_or_else(|| name.clone(), |c| c.title.clone())
                };
                Ok(LaunchResult::UserLimit(Box::new(UserLimit {
                    title: course.title.clone(),
                    held: held.iter().map(title).collect(),
                    return_url: claims.return_url(),
                })))
            }
            LaunchOutcome::NoLiveSession => Err(Refusal::internal(
                "a launch with a course was decided as a resume-only one",
            )),
            LaunchOutcome::Full { in_use } => {
                self.decided(&course.name, Outcome::Full);
                tracing::warn!(in_use, max = course.max, "launch refused: lab is full");
                Ok(LaunchResult::Full {
                    title: course.title.clone(),
                })
            }
        }
    }

    /// A launch whose course did not resolve: the key's live session back
    /// (`Some`), or `None` once the login is used up and no session is live.
    /// Only a verified id_token's exact key (issuer, deployment, user,
    /// context, resource link) finds a session, as any resume does.
    async fn resume_only(
        &self,
        launch: &Launch,
        login: LoginMatch<'_>,
        catalog: &super::catalog::Catalog,
        now: i64,
    ) -> Result<Option<LaunchResult>, Refusal> {
        let request = LaunchRequest {
            state: login.state.to_owned(),
            nonce: login.nonce.to_owned(),
            issuer: login.issuer.to_owned(),
            client_id: login.client_id.to_owned(),
            course: String::new(),
            spec_hash: String::new(),
            key: session_key(launch),
            max: 0,
            expiry_ms: 0,
            per_user: 0,
            labs_per_user: self.labs_per_user,
            resume_only: true,
        };
        let outcome = self
            .launches
            .decide(request)
            .await
            .map_err(Refusal::internal)?;
        match outcome {
            LaunchOutcome::Claimed(claimed) => {
                let name = claimed.session.course.clone();
                tracing::Span::current().record("course", name.as_str());
                self.decided(&name, Outcome::Resumed);
                tracing::Span::current().record("session", claimed.session.id.as_str());
                tracing::info!(vm = %claimed.vm.id, resumed = true,
                    "launch: the live session of a course no longer in the catalog");
                let title = match catalog.course(&name) {
                    Some(c) => c.title.clone(),
                    None => self
                        .store
                        .courses()
                        .await?
                        .into_iter()
                        .find(|r| r.name == name)
                        .map_or(name, |r| r.title),
                };
                Ok(Some(LaunchResult::Session {
                    code: self.tokens.issue_code(&claimed.session.id, secs(now)),
                    session_id: claimed.session.id,
                    resumed: true,
                    course: title,
                }))
            }
            LaunchOutcome::NoLiveSession => Ok(None),
            LaunchOutcome::LoginRejected => Err(self.login_refusal(login, now).await),
            _ => Err(Refusal::internal(
                "a resume-only launch was decided as a new lab",
            )),
        }
    }

    /// Counts a decided lab launch and names its outcome in the launch's
    /// span (`http::lti::launch` makes the span and names the others).
    fn decided(&self, course: &str, outcome: Outcome) {
        self.metrics.launched(course, outcome);
        tracing::Span::current().record("outcome", outcome.as_str());
    }

    /// The course a launch opens, in order: a placement labpool signed
    /// (Deep Linking puts it on the link), else the course listing the LMS
    /// context. Either way the course must name the launching platform
    /// (and deployment) in `lti.platforms`. A plain `labpool_course`
    /// anyone could type is refused, unless it names the very course the
    /// context maps to (it then adds nothing), or the platform is the
    /// try-it LMS of `serve --dev`.
    fn resolve<'c>(
        &self,
        catalog: &'c super::catalog::Catalog,
        launch: &Launch,
    ) -> Result<&'c Arc<LaunchableCourse>, Unresolved> {
        let claims = &launch.claims;
        let registration = &launch.registration;
        let deployment = claims.deployment();
        let context = claims.context.as_ref().map(|c| c.id.as_str());
        let needs = |named: Option<String>| {
            Unresolved::Needs(Box::new(NeedsCourse {
                issuer: claims.iss.clone(),
                context_id: context.map(str::to_owned),
                context_title: claims.context.as_ref().and_then(|c| c.title.clone()),
                named,
                instructor: is_instructor(claims),
                // Only what this platform may launch: other platforms'
                // courses are not its instructors' business.
                courses: catalog
                    .courses
                    .iter()
                    .filter(|c| c.allows(registration, deployment))
                    .map(|c| c.name.clone())
                    .collect(),
            }))
        };
        let permitted = |course: &'c Arc<LaunchableCourse>| {
            if course.allows(registration, deployment) {
                Ok(course)
            } else {
                Err(Unresolved::Refused(Refusal::course_scope(format!(
                    "course `{}` may not be launched from `{}` (deployment `{deployment}`): \
                     its file does not name this platform under lti.platforms",
                    course.name, registration.platform.issuer
                ))))
            }
        };
        if let Some(token) = claims.custom(PLACEMENT_PARAM) {
            let placement = self
                .placements
                .open(&token, &registration.platform.issuer, deployment)
                .map_err(|e| Unresolved::Refused(Refusal::course_scope(e.to_string())))?;
            return match catalog.course(&placement.course) {
                Some(course) => permitted(course),
                None => Err(needs(Some(placement.course))),
            };
        }
        let mapped = context.and_then(|id| catalog.for_context(id));
        if let Some(named) = claims.custom(COURSE_PARAM) {
            if registration.platform.any_course {
                return catalog.course(&named).ok_or_else(|| needs(Some(named)));
            }
            if let Some(course) = mapped.filter(|c| c.name == named) {
                return permitted(course);
            }
            return Err(Unresolved::Refused(Refusal::course_scope(format!(
                "the link names course `{named}` by a plain `{COURSE_PARAM}` custom parameter, \
                 which anyone could type: labpool opens a course named on a link only when its \
                 content picker (Deep Linking) placed it there. Choose the lab with the LMS's \
                 content picker, or list this LMS course (`{}`) under the course's lti.contexts",
                context.unwrap_or("no context")
            ))));
        }
        match mapped {
            Some(course) => permitted(course),
            None => Err(needs(None)),
        }
    }

    /// Uses the login up outside a claim (deep linking, unresolved course),
    /// so the same id_token cannot be posted again.
    async fn use_login(&self, login: LoginMatch<'_>, now: i64) -> Result<(), Refusal> {
        if self.store.consume_login(login, now).await? {
            Ok(())
        } else {
            Err(self.login_refusal(login, now).await)
        }
    }

    /// Why the store would not use the login: each case named, for the log.
    async fn login_refusal(&self, login: LoginMatch<'_>, now: i64) -> Refusal {
        let row = match self.store.login(login.state).await {
            Ok(row) => row,
            Err(e) => return e.into(),
        };
        let Some(row) = row else {
            return Refusal::state("unknown login state (never issued here, or long expired)");
        };
        if row.nonce != login.nonce {
            let used_elsewhere = matches!(
                self.store.login_by_nonce(login.nonce).await,
                Ok(Some(other)) if other.used_at.is_some()
            );
            return if used_elsewhere {
                Refusal::replayed("the id_token's nonce was already used by another launch")
            } else {
                Refusal::forged("the id_token's nonce is not the one issued for this login")
            };
        }
        if row.used_at.is_some() {
            return Refusal::replayed(
                "this launch was already used: state and nonce are single-use",
            );
        }
        if row.expires_at <= now {
            return Refusal::expired("the login expired before the launch arrived");
        }
        if row.issuer != login.issuer || row.client_id != login.client_id {
            return Refusal::forged("the launch is for another platform than its login");
        }
        if row
            .deployment_id
            .as_deref()
            .is_some_and(|d| d != login.deployment_id)
        {
            return Refusal::forged(
                "the launch's deployment_id differs from the login's lti_deployment_id",
            );
        }
        Refusal::internal("the login could not be used")
    }

    /// No state cookie came back: the LMS iframe blocks third-party cookies.
    /// The refusal carries a link that starts the login again in a window
    /// of its own, where the cookie is first-party.
    async fn missing_cookie(&self, state: &str) -> Refusal {
        let mut refusal = Refusal::state(
            "no state cookie came with the launch (the browser blocks cookies in the LMS frame)",
        );
        if let Ok(Some(login)) = self.store.login(state).await {
            if login.used_at.is_some() {
                // Its cookie went with the first use: this is a replay.
                return Refusal::replayed(
                    "this launch was already used: state and nonce are single-use",
                );
            }
            let mut url = url::Url::parse(&self.login_url()).expect("login URL parses");
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("iss", &login.issuer)
                    .append_pair("client_id", &login.client_id)
                    .append_pair("login_hint", &login.login_hint)
                    .append_pair("target_link_uri", &login.target_link_uri);
                if let Some(hint) = &login.message_hint {
                    q.append_pair("lti_message_hint", hint);
                }
                if let Some(d) = &login.deployment_id {
                    q.append_pair("lti_deployment_id", d);
                }
            }
            refusal.retry = Some(url.into());
        }
        refusal
    }

    /// The waiting page's poll, with the pass the launch gave the page
    /// (only that browser may poll: the ticket turns into a session).
    pub async fn poll_wait(
        &self,
        ticket_id: &str,
        pass: Option<&str>,
        now: i64,
    ) -> Result<WaitStatus, Refusal> {
        if let Err(e) = self.tokens.check_wait_pass(pass, ticket_id, secs(now)) {
            tracing::warn!(reason = %e, "waiting page poll refused: not the launching browser's pass");
            return Ok(WaitStatus::Refused);
        }
        let Some(ticket) = self.store.wait_ticket(ticket_id).await? else {
            return Ok(WaitStatus::Gone);
        };
        let catalog = self.catalog.get().await?;
        let Some(course) = catalog.course(&ticket.course) else {
            return Ok(WaitStatus::Gone);
        };
        match self
            .store
            .poll_wait(ticket_id, &course.spec_hash, now + course.expiry_ms, now)
            .await?
        {
            WaitOutcome::Gone => Ok(WaitStatus::Gone),
            WaitOutcome::Claimed(claimed) => {
                (self.on_demand)();
                self.metrics.wait_claimed(&course.name);
                tracing::info!(course = %course.name, session = %claimed.session.id,
                    vm = %claimed.vm.id, "waiting launch got its VM");
                let code = self.tokens.issue_code(&claimed.session.id, secs(now));
                Ok(WaitStatus::Ready {
                    url: self.session_url(&claimed.session.id, &code),
                })
            }
            WaitOutcome::Waiting { ahead } => {
                let (booting, problem) = self.store.course_progress(&course.name).await?;
                Ok(WaitStatus::Waiting {
                    ahead,
                    booting,
                    problem,
                })
            }
        }
    }

    /// The terminal page of a session, with a one-time code in the
    /// fragment: browsers never send a fragment to a server, so the code
    /// is in no request line and no access log, and the page removes it
    /// from the address bar once read.
    pub fn session_url(&self, session_id: &str, code: &str) -> String {
        format!("{}/session/{session_id}#code={code}", self.base_url)
    }

    /// labpool's own web origin (`lti.base_url`'s scheme, host and port), as
    /// browsers send it in `Origin`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The waiting page of a ticket, its pass in the fragment (as above).
    pub fn wait_url(&self, ticket: &str, pass: &str) -> String {
        format!("{}/launch/wait/{ticket}#pass={pass}", self.base_url)
    }
}

fn session_key(launch: &Launch) -> SessionKey {
    let c = &launch.claims;
    SessionKey {
        issuer: launch.registration.platform.issuer.clone(),
        deployment_id: c.deployment().to_owned(),
        user_sub: c.sub.clone().unwrap_or_default(),
        context_id: c.context.as_ref().map(|x| x.id.clone()).unwrap_or_default(),
        resource_link_id: c
            .resource_link
            .as_ref()
            .map(|r| r.id.clone())
            .unwrap_or_default(),
    }
}

/// Instructors, teaching assistants and administrators: they are shown how
/// to set a link up; students are told to ask them.
pub fn is_instructor(claims: &LaunchClaims) -> bool {
    super::roles::may_place(claims)
}
