// Type declarations for streamgate.js.

/** The event type of the gateway's "events may be missing" notice. */
export declare const RESET_EVENT: "streamgate.reset";
/** The event type that ends a stream whose token expired. */
export declare const AUTH_EXPIRED_EVENT: "streamgate.auth_expired";
/** The event type that carries the stream's cursor before any event. */
export declare const CURSOR_EVENT: "streamgate.cursor";

/** The part of the Web Storage API the client uses. */
export interface CursorStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export type ConnectionState = "connecting" | "open" | "retrying" | "closed";

export interface StreamgateEvent {
  /** The topic, for a one-topic subscription. */
  topic?: string;
  /** "message" for unnamed events, else the event type. */
  type: string;
  data: string;
  /** The cursor after this event. */
  id: string;
}

export interface ResetNotice {
  topic?: string;
  reason?: "trimmed" | "history_lost" | string;
}

export interface SubscribeOptions {
  /** The gateway's events endpoint, absolute or relative. Default "/events". */
  url?: string;
  topics: string[];
  onEvent?: (event: StreamgateEvent) => void;
  /** Named event types to receive besides unnamed messages. */
  eventTypes?: string[];
  onReset?: (notice: ResetNotice) => void;
  /** Return (or resolve to) a fresh token to go on; nothing to stop. */
  onAuthExpired?: () => string | void | null | Promise<string | void | null>;
  /** Sent as `?token=` (only where the gateway allows query tokens). */
  token?: string;
  /** `open`: the stream has its cursor; every event published from then on is delivered. */
  onState?: (state: ConnectionState) => void;
  /** The gateway refused for good (400, 401 without a fresh token, 403); the subscription is closed. */
  onError?: (error: { status: number; message: string }) => void;
  /** Where cursors persist; default localStorage (memory when unavailable). */
  storage?: CursorStorage | null;
  storageKey?: string;
  backoff?: { initialMs?: number; maxMs?: number };
  withCredentials?: boolean;
  /** An EventSource constructor (default the global one). */
  EventSource?: unknown;
}

export interface Subscription {
  close(): void;
  forget(): void;
  readonly state: ConnectionState;
  readonly cursor: string | null;
}

export declare function subscribe(options: SubscribeOptions): Subscription;
export declare function defaultStorage(): CursorStorage;
export declare function memoryStorage(): CursorStorage;
