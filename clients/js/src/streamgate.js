// Streamgate's browser client: one or several topics over one EventSource, with the cursor
// kept across reloads, resets and token expiry surfaced as callbacks, and reconnection
// that never gives up for good.
//
// No dependencies. Works in every browser with EventSource, and in Node with a
// WHATWG-compatible EventSource passed as `EventSource`.
//
// The guarantee (docs/DELIVERY.md in the Streamgate repository): per topic, events arrive
// in history order with no gap and no duplicate from the cursor onward; when events were
// lost the client is told with `onReset` before anything else of that topic.

/** The event type of the gateway's "events may be missing" notice. */
export const RESET_EVENT = "streamgate.reset";
/** The event type that ends a stream whose token expired. */
export const AUTH_EXPIRED_EVENT = "streamgate.auth_expired";
/** The event type that carries the stream's cursor before any event (opt-in, `cursorEvent=1`). */
export const CURSOR_EVENT = "streamgate.cursor";

const DEFAULT_BACKOFF = { initialMs: 500, maxMs: 30000 };

/** Stores cursors in `localStorage` when there is one, else in memory. */
export function defaultStorage() {
  try {
    if (typeof localStorage !== "undefined") {
      const probe = "streamgate.probe";
      localStorage.setItem(probe, "1");
      localStorage.removeItem(probe);
      return localStorage;
    }
  } catch (_) {
    // Private mode, or storage disabled: fall through to memory.
  }
  return memoryStorage();
}

/** A storage that forgets on reload (the `Storage` subset the client uses). */
export function memoryStorage() {
  const items = new Map();
  return {
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => void items.set(key, String(value)),
    removeItem: (key) => void items.delete(key),
  };
}

/**
 * Subscribes to `options.topics` at `options.url` (the gateway's `/events`, absolute or
 * relative). Returns a handle with `close()`, `state` and `cursor`.
 *
 * Options:
 * - `url` (string, default "/events"), `topics` (non-empty array of strings);
 * - `onEvent(event)`: every event; `event` has `topic` (when the cursor names it; for one
 *   topic always), `type`, `data`, `id`;
 * - `eventTypes`: named event types to listen to besides unnamed messages;
 * - `onReset({topic, reason})`: events of `topic` may be missing (`trimmed`,
 *   `history_lost`): refetch that topic's state;
 * - `onAuthExpired()`: the token expired; return (or resolve to) a fresh token to go on,
 *   or nothing to stop;
 * - `token`: sent as `?token=` (only if the gateway allows query tokens; cookies are sent
 *   by the browser by themselves);
 * - `onState(state)`: "connecting", "open", "retrying", "closed";
 * - `onError({status, message})`: the gateway refused for good (403: a topic is not
 *   allowed; 401 with no fresh token from `onAuthExpired`); the subscription is closed;
 * - `storage` (a `Storage`-like object, default localStorage) and `storageKey`;
 * - `backoff` ({initialMs, maxMs}): delays, with jitter, when the browser gave up;
 * - `EventSource`: the constructor (default the global one).
 */
export function subscribe(options) {
  const topics = [...(options.topics || [])];
  if (!topics.length) throw new TypeError("streamgate: at least one topic is required");
  const EventSourceImpl = options.EventSource || globalThis.EventSource;
  if (!EventSourceImpl) throw new TypeError("streamgate: no EventSource available");
  const storage = options.storage === undefined ? defaultStorage() : options.storage || memoryStorage();
  const storageKey = options.storageKey || "streamgate.cursor:" + [...topics].sort().join("\n");
  const backoff = { ...DEFAULT_BACKOFF, ...(options.backoff || {}) };
  const base = options.url || "/events";
  let token = options.token;
  let source = null;
  let retryTimer = null;
  let attempt = 0;
  let closed = false;
  let state = "connecting";
  let cursor = storage.getItem(storageKey);

  const setState = (next) => {
    if (state === next) return;
    state = next;
    if (options.onState) options.onState(next);
  };
  const remember = (id) => {
    if (!id) return;
    cursor = id;
    storage.setItem(storageKey, id);
  };

  const url = () => {
    const origin = typeof location !== "undefined" ? location.href : "http://localhost/";
    const target = new URL(base, origin);
    for (const topic of topics) target.searchParams.append("topic", topic);
    target.searchParams.set("cursorEvent", "1");
    if (cursor) target.searchParams.set("lastEventId", cursor);
    if (token) target.searchParams.set("token", token);
    return target.toString();
  };

  // The topic a single-topic event belongs to; with several topics the data says it only
  // if the application puts it there, so it is left undefined.
  const topicOf = () => (topics.length === 1 ? topics[0] : undefined);

  const deliver = (type, event) => {
    setState("open");
    remember(event.lastEventId);
    if (options.onEvent) options.onEvent({ topic: topicOf(), type, data: event.data, id: event.lastEventId });
  };

  const open = () => {
    if (closed) return;
    setState(attempt === 0 ? "connecting" : "retrying");
    source = new EventSourceImpl(url(), { withCredentials: !!options.withCredentials });
    source.onopen = () => {
      attempt = 0;
    };
    source.onmessage = (event) => deliver("message", event);
    for (const type of options.eventTypes || []) source.addEventListener(type, (event) => deliver(type, event));
    // "open" once the stream has its cursor, not with the response headers (the browser's
    // `open`): when Redis is slower than the gateway's join wait, the headers come first
    // and the cursor once the subscription is in place; every event published after the
    // cursor is delivered.
    source.addEventListener(CURSOR_EVENT, (event) => {
      remember(event.lastEventId);
      setState("open");
    });
    source.addEventListener(RESET_EVENT, (event) => {
      setState("open");
      remember(event.lastEventId);
      let notice = {};
      try {
        notice = JSON.parse(event.data);
      } catch (_) {
        // A malformed notice still means "refetch": report it without a topic.
      }
      if (options.onReset) options.onReset({ topic: notice.topic, reason: notice.reason });
    });
    source.addEventListener(AUTH_EXPIRED_EVENT, async () => {
      source.close();
      const fresh = options.onAuthExpired ? await options.onAuthExpired() : undefined;
      if (closed) return;
      if (fresh === undefined || fresh === null) {
        handle.close();
        return;
      }
      if (typeof fresh === "string") token = fresh;
      attempt = 0;
      open();
    });
    source.onerror = () => {
      // While the browser retries by itself (readyState CONNECTING) there is nothing to
      // do; when it gave up for good (a non-200 answer, readyState CLOSED) find out why.
      if (closed) return;
      if (source.readyState === EventSourceImpl.CLOSED || source.readyState === 2) {
        source.close();
        refused();
      } else {
        setState("retrying");
      }
    };
  };

  // EventSource hides the status of a refused request: ask once with fetch. 401 asks the
  // application for a fresh token, 403 stops (the token does not allow a topic), anything
  // else (a proxy's 502, a gateway that is down) is retried with backoff.
  const refused = async () => {
    const status = await probe();
    if (closed) return;
    if (status === 401) {
      const fresh = options.onAuthExpired ? await options.onAuthExpired() : undefined;
      if (closed) return;
      if (typeof fresh === "string" && fresh) {
        token = fresh;
        attempt = 0;
        open();
        return;
      }
      return fail(401, "the gateway wants a valid token");
    }
    if (status === 403) return fail(403, "the token does not allow one of the topics");
    if (status === 400) return fail(400, "the gateway refused the request as malformed");
    scheduleRetry();
  };

  const probe = async () => {
    if (typeof fetch !== "function") return null;
    const controller = new AbortController();
    try {
      const response = await fetch(url(), {
        headers: { accept: "application/json" },
        credentials: options.withCredentials ? "include" : "same-origin",
        signal: controller.signal,
      });
      controller.abort();
      return response.status;
    } catch (_) {
      return null;
    }
  };

  const fail = (status, message) => {
    if (options.onError) options.onError({ status, message });
    handle.close();
  };

  const scheduleRetry = () => {
    setState("retrying");
    const ceiling = Math.min(backoff.maxMs, backoff.initialMs * 2 ** attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    attempt += 1;
    retryTimer = setTimeout(open, delay);
  };

  const handle = {
    /** Stops the subscription (the stored cursor stays for the next one). */
    close() {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      if (source) source.close();
      setState("closed");
    },
    /** Forgets the stored cursor: the next subscription starts live. */
    forget() {
      cursor = null;
      storage.removeItem(storageKey);
    },
    /** "connecting", "open", "retrying" or "closed". */
    get state() {
      return state;
    },
    /** The cursor a reconnect would resume from. */
    get cursor() {
      return cursor;
    },
  };
  open();
  return handle;
}
