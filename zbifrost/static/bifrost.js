// bifrost.js: the zbifrost browser client, an ES module with no dependencies (docs/protocol.md).
//
// It owns one WebSocket: request/reply matching by `_requestId` (a request's progress,
// display and input_request events name it in `_forRequestId`), the server's events
// (progress, display, input_request, message, server_shutdown), channel subscriptions, and
// reconnection with exponential backoff. It knows nothing about pages or zUI menus.
//
//   import { BifrostClient, BifrostError } from '/bifrost.js';
//   const client = new BifrostClient();            // ws(s)://<this page's host>/ws
//   const info = await client.connect();           // connection_info.data
//   const result = await client.dispatch('^Ping'); // {message: 'Pong!'}
//
// hooks (all optional): onConnected(info) on every connection_info; onDisconnected({code,
// reason, wasClean, refusal, final, why}), where `refusal` ({status, reason}) says why the server refused
// the upgrade (403 origin, 503 full or stopping), `final` is true when no reconnection follows
// and `why` then says so in words (`closeExplanation`); onReconnecting(attempt, delayMs); onProgress({current, total, label},
// requestId); onDisplay(frame, requestId); onInput(input_request frame) returns (or resolves
// to) the value sent back as input_response, or undefined to send nothing;
// onServerShutdown(); onMessage(frame) for every frame received; onRecovered(channel,
// recovered, result) after each re-subscribe of a reconnection (or of an `unsubscribed` with
// reason `insufficient_state`, when the server could not keep a subscription whole): `recovered` false means
// messages were lost (the page should reload what it shows from the channel); onJoin(channel,
// info) and onLeave(channel, info) when another client subscribes to or leaves a channel whose
// rule turns join_leave on (info: {client_id, user, role}); onUnsubscribed(channel, reason)
// when the server took the client off a channel (`unsubscribed`): reason `server` (the server
// API's unsubscribe) drops the channel and its handlers for good; `insufficient_state` (the
// server could not send every message) subscribes again at once with `since`, and
// onRecovered then says `recovered: false`. A re-subscribe answered `broker_unavailable` is
// sent again (0.5 s, doubling) while the connection lasts.
//
// Tokens: `token` is sent as is; or `getToken`, an async function resolving to a token (such
// as a JWT that the application's own server signs for its logged-in user), is called for
// the first connection, for every reconnection, and shortly before the token expires
// (connection_info's auth.expires), when its answer is sent as `refresh` on the open
// connection; `client.info.auth` then follows the new token (its role may differ). A page
// that uses it never sees 1008 "Token expired".
//
// Channels: the client keeps each channel's epoch and latest offset (`position(channel)`),
// re-subscribes with `since` after a reconnection, and the server replays what was missed.
// presence(channel) and presenceStats(channel) say who is subscribed, where the channel's rule
// turns presence on (else they reject with `not_available`).

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 30000;
const CLOSE_POLICY = 1008; // authentication failures (and rate-limit abuse): never retried
const CLOSE_ABNORMAL = 1006; // what a browser reports for a refused upgrade, whatever the reason
const HOPELESS_STATUS = 403; // a refused origin: retrying cannot help (503 can: retried)
const TOKEN_EXPIRED = 'Token expired'; // a 1008 that a new token from getToken cures
const RESUBSCRIBE = 'insufficient_state'; // an `unsubscribed` reason that subscribes again with `since`
const BROKER_UNAVAILABLE = 'broker_unavailable'; // a re-subscribe answered so is sent again later

// Why a close with no reconnection after it happened, in words (docs/protocol.md section 9).
export function closeExplanation(code, reason) {
  if (code !== CLOSE_POLICY) return `The connection closed (${code}${reason ? ` ${reason}` : ''}).`;
  switch (reason) {
    case 'Disconnected': return 'The server disconnected this client (Disconnected); it does not reconnect.';
    case 'Unauthorized': return 'The application refused this connection (Unauthorized); it does not reconnect.';
    case 'Authentication required': return 'The server requires a token (Authentication required).';
    case 'Invalid token': return 'The server refused the token (Invalid token).';
    case TOKEN_EXPIRED: return 'The token expired (Token expired).';
    case 'Rate limit exceeded': return 'This client sent too many messages (Rate limit exceeded).';
    default: return `The server closed the connection (${reason || 'policy violation'}); it does not reconnect.`;
  }
}
const REFRESH_BEFORE_MS = 10000; // refresh this long before the token expires, or at 2/3 of a shorter life

// An error reply (`code` from docs/protocol.md section 3, `details` when the server sent them), or
// one of the client's own: `timeout` (no reply in time) and `disconnected` (the connection
// closed first; `closeCode` and `reason` say how, and `status` is the HTTP status of a refused
// upgrade).
export class BifrostError extends Error {
  constructor(code, message, {details, closeCode, reason, status} = {}) {
    super(message);
    this.name = 'BifrostError';
    this.code = code;
    if (details !== undefined) this.details = details;
    if (closeCode !== undefined) {
      this.closeCode = closeCode;
      this.reason = reason;
    }
    if (status !== undefined) this.status = status;
  }
}

function defaultUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}

export class BifrostClient {
  // options: token or getToken, reconnect (default true), timeout (ms per request, default
  // 30000), hooks.
  constructor(url, {token, getToken, reconnect = true, timeout = 30000, hooks = {}} = {}) {
    this.url = url || defaultUrl();
    this.token = token;
    this.getToken = getToken;
    this._refreshTimer = null;
    this.reconnect = reconnect;
    this.timeout = timeout;
    this.hooks = hooks;
    this.info = null; // connection_info.data of the current connection; null when there is none
    this._socket = null;
    this._nextId = 1;
    this._pending = new Map(); // _requestId -> {resolve, reject, timeout, timer, onProgress, onDisplay, onReply}
    this._channels = new Map(); // channel -> Set of handlers
    this._positions = new Map(); // channel -> {epoch, offset} of the last message or subscribe reply
    this._closing = false; // disconnect() was called
    this._attempt = 0; // reconnection attempts since the last successful connection
    this._retryTimer = null;
    this._firstConnect = null; // {resolve, reject} of connect() until its first connection_info
  }

  // Resolves with connection_info.data. With `reconnect`, failed attempts are retried; it
  // rejects with a BifrostError `disconnected` carrying the close code and reason when the
  // server refuses the client (1008 "Authentication required" / "Invalid token", or an
  // upgrade refused with 403 "Origin not allowed", with its `status`), when a
  // first attempt fails without `reconnect`, or on disconnect().
  connect() {
    if (this.info) return Promise.resolve(this.info);
    if (!this._firstConnect) {
      this._closing = false;
      clearTimeout(this._retryTimer);
      let settle;
      const promise = new Promise((resolve, reject) => { settle = {resolve, reject}; });
      this._firstConnect = {...settle, promise};
      try {
        this._open();
      } catch (err) { // a malformed URL
        this._firstConnect = null;
        return Promise.reject(err);
      }
      return promise;
    }
    return this._firstConnect.promise;
  }

  // Closes for good: no reconnection; requests still waiting reject with `disconnected`.
  disconnect() {
    this._closing = true;
    clearTimeout(this._retryTimer);
    clearTimeout(this._refreshTimer);
    this.info = null;
    this._rejectPending(1000, 'Client disconnect');
    this._failConnect(1000, 'Client disconnect');
    this._socket?.close(1000);
  }

  // Any event; resolves with the reply's `result`. options: timeout, onProgress(progress,
  // requestId) / onDisplay(frame, requestId) for this request's progress and display events,
  // and onReply(frame) for the whole reply frame (e.g. its `_cached`) before it settles.
  request(event, fields = {}, {timeout = this.timeout, onProgress, onDisplay, onReply} = {}) {
    if (!this.info) {
      return Promise.reject(new BifrostError('disconnected', 'Not connected'));
    }
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const entry = {resolve, reject, timeout, onProgress, onDisplay, onReply, timer: null};
      this._pending.set(id, entry);
      this._arm(id, entry);
      this._socket.send(JSON.stringify({...fields, event, _requestId: id}));
    });
  }

  // Runs a zUI command. options: args, data, zBlock, no_cache, and the request options above.
  dispatch(zKey, {timeout, onProgress, onDisplay, onReply, ...fields} = {}) {
    return this.request('dispatch', {...fields, zKey}, {timeout, onProgress, onDisplay, onReply});
  }

  // handler(data, from, offset) for each `message` on the channel; kept across reconnections.
  // `since` ({epoch, offset}, e.g. a position saved before the page reloaded) asks for the
  // messages published after it: they reach the handler, and the result's `recovered` says
  // whether all of them were found. Resolves with the subscribe result ({channel, subscribed,
  // epoch, offset, recovered?}), or null when it will be sent at the next connection.
  subscribe(channel, handler, {since} = {}) {
    const known = this._channels.has(channel);
    if (!known) this._channels.set(channel, new Set());
    this._channels.get(channel).add(handler);
    if (!known && since) this._positions.set(channel, {epoch: since.epoch, offset: since.offset});
    if (known || !this.info) return Promise.resolve(null);
    // a subscribe the server refused (forbidden, a bad name) is forgotten, not retried at every
    // reconnection; one cut short by the connection is sent again when it is back
    return this._subscribe(channel).catch((error) => {
      if (!['disconnected', 'timeout'].includes(error.code) && this._channels.get(channel)?.has(handler)) {
        this._channels.delete(channel);
        this._positions.delete(channel);
      }
      throw error;
    });
  }

  // {epoch, offset} of the last message received on the channel (or of its subscribe reply).
  position(channel) {
    const position = this._positions.get(channel);
    return position ? {...position} : null;
  }

  // Removes one handler, or all of the channel's when none is given.
  unsubscribe(channel, handler) {
    const handlers = this._channels.get(channel);
    if (!handlers) return Promise.resolve(null);
    if (handler) handlers.delete(handler); else handlers.clear();
    if (handlers.size) return Promise.resolve(null);
    this._channels.delete(channel);
    this._positions.delete(channel);
    return this.info ? this.request('unsubscribe', {channel}) : Promise.resolve(null);
  }

  // The server sends no `message` back to its publisher: a publish that is the channel's next
  // offset moves this client's position on, so that a reconnection does not replay it.
  async publish(channel, data) {
    const result = await this.request('publish', {channel, data});
    const position = this._positions.get(channel);
    if (position && position.epoch === result.epoch && result.offset === position.offset + 1) {
      position.offset = result.offset;
    }
    return result;
  }

  // {channel, clients: {<client_id>: {user, role}}}: every client subscribed to the channel now.
  presence(channel) {
    return this.request('presence', {channel});
  }

  // {channel, clients: <subscribed connections>, users: <distinct users>}.
  presenceStats(channel) {
    return this.request('presence_stats', {channel});
  }

  // Sends the subscribe, with `since` when a position is known, and keeps the new position.
  async _subscribe(channel) {
    const since = this._positions.get(channel);
    const result = await this.request('subscribe', since ? {channel, since} : {channel});
    if (this._channels.has(channel)) {
      const known = this._positions.get(channel);
      // replayed messages may have moved the position on already
      if (!known || known.epoch !== result.epoch || known.offset < result.offset) {
        this._positions.set(channel, {epoch: result.epoch, offset: result.offset});
      }
    }
    return result;
  }

  // -- the socket ------------------------------------------------------------------------

  _open() {
    if (!this.getToken) {
      this._openSocket();
      return;
    }
    this._socket = null;
    Promise.resolve().then(() => this.getToken()).then(
      (token) => {
        if (this._closing) return;
        this.token = token;
        this._openSocket();
      },
      (err) => {
        console.error('bifrost: getToken failed', err);
        if (!this._closing) this._afterClose({code: CLOSE_ABNORMAL, reason: 'getToken failed', wasClean: false});
      });
  }

  _openSocket() {
    const url = this.token ? `${this.url}${this.url.includes('?') ? '&' : '?'}${new URLSearchParams({token: this.token})}` : this.url;
    const socket = new WebSocket(url);
    this._socket = socket;
    let opened = false;
    socket.onopen = () => { opened = true; };
    socket.onmessage = (event) => { if (socket === this._socket) this._received(JSON.parse(event.data)); };
    socket.onclose = (event) => { if (socket === this._socket) this._closed(event, opened); };
  }

  _received(msg) {
    this.hooks.onMessage?.(msg);
    const id = msg._forRequestId;
    switch (msg.event) {
      case undefined: return this._reply(msg, msg._requestId);
      case 'connection_info': return this._connected(msg.data);
      case 'progress': {
        this._rearm(id);
        const progress = {current: msg.current, total: msg.total, label: msg.label};
        this.hooks.onProgress?.(progress, id);
        return this._pending.get(id)?.onProgress?.(progress, id);
      }
      case 'display':
        this._rearm(id);
        this.hooks.onDisplay?.(msg, id);
        return this._pending.get(id)?.onDisplay?.(msg, id);
      case 'input_request': this._rearm(id); return this._answer(msg);
      case 'message': {
        const position = this._positions.get(msg.channel);
        if (position && msg.offset > position.offset) position.offset = msg.offset;
        for (const handler of this._channels.get(msg.channel) || []) handler(msg.data, msg.from, msg.offset);
        return;
      }
      case 'unsubscribed': return this._unsubscribed(msg.channel, msg.reason);
      case 'join': return this.hooks.onJoin?.(msg.channel, msg.info);
      case 'leave': return this.hooks.onLeave?.(msg.channel, msg.info);
      case 'server_shutdown': return this.hooks.onServerShutdown?.();
    }
  }

  // The server took this client off a channel: for good, or to subscribe again from its position.
  _unsubscribed(channel, reason) {
    if (!this._channels.has(channel)) return;
    if (reason === RESUBSCRIBE) {
      this._resubscribe(channel, true);
    } else {
      this._channels.delete(channel);
      this._positions.delete(channel);
    }
    this.hooks.onUnsubscribed?.(channel, reason);
  }

  // Subscribes to a kept channel on this connection (with `since` when `resuming`, then
  // onRecovered). A server whose broker is unreachable (`broker_unavailable`) is asked again,
  // after RETRY_FIRST_MS and doubling, while this connection lasts and the channel is wanted;
  // any other failure leaves the channel unsubscribed until the next connection.
  _resubscribe(channel, resuming, attempt = 0) {
    const info = this.info;
    this._subscribe(channel).then(
      (result) => { if (resuming) this.hooks.onRecovered?.(channel, result.recovered, result); },
      (error) => {
        if (error.code !== BROKER_UNAVAILABLE) return;
        const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** attempt);
        setTimeout(() => {
          if (this.info === info && this._channels.has(channel)) this._resubscribe(channel, resuming, attempt + 1);
        }, delay);
      });
  }

  _connected(info) {
    this.info = info;
    this._attempt = 0;
    this._scheduleRefresh();
    for (const channel of this._channels.keys()) this._resubscribe(channel, this._positions.has(channel));
    this._firstConnect?.resolve(info);
    this._firstConnect = null;
    this.hooks.onConnected?.(info);
  }

  // With getToken, a new token is sent as `refresh` a little before the current one expires.
  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    const expires = this.info?.auth?.expires;
    if (!this.getToken || expires === null || expires === undefined) return;
    const left = expires * 1000 - Date.now();
    const delay = Math.max(0, left - Math.min(REFRESH_BEFORE_MS, left / 3));
    this._refreshTimer = setTimeout(() => this._refresh(), delay);
  }

  async _refresh() {
    const info = this.info;
    try {
      await this.request('refresh', {token: await this.getToken()});
      // the new token may carry another role: connection_info tells the current auth
      const current = await this.request('connection_info');
      if (this.info === info) { // still the same connection
        info.auth = current.auth;
        this._scheduleRefresh();
      }
    } catch (err) {
      // the connection closes when its token expires, and reconnects with a new one
      console.error('bifrost: refreshing the token failed', err);
    }
  }

  _reply(msg, id) {
    const entry = this._pending.get(id);
    if (!entry) return;
    this._settle(id);
    entry.onReply?.(msg);
    if ('error' in msg) {
      entry.reject(new BifrostError(msg.code, msg.error, {details: msg.details}));
    } else {
      entry.resolve(msg.result);
    }
  }

  async _answer(request) {
    let value;
    try {
      value = await this.hooks.onInput?.(request);
    } catch (err) {
      console.error('bifrost: the onInput hook failed; the command will time out', err);
      return;
    }
    if (value !== undefined && this._socket?.readyState === WebSocket.OPEN) {
      this._socket.send(JSON.stringify({event: 'input_response', requestId: request.requestId, value}));
    }
  }

  _closed({code, reason, wasClean}, opened) {
    this._socket = null;
    this.info = null;
    clearTimeout(this._refreshTimer);
    this._rejectPending(code, reason);
    if (opened || code !== CLOSE_ABNORMAL || this._closing) {
      this._afterClose({code, reason, wasClean});
    } else {
      this._askWhyRefused().then((refusal) => this._afterClose({code, reason, wasClean, refusal}));
    }
  }

  // A 1008 is never retried (a token from getToken cures only "Token expired"): neither the
  // server API's "Disconnected" nor the connect proxy's "Unauthorized" would let it back in.
  _afterClose({code, reason, wasClean, refusal}) {
    const renewable = this.getToken && reason === TOKEN_EXPIRED;
    const hopeless = (code === CLOSE_POLICY && !renewable) || refusal?.status === HOPELESS_STATUS;
    const retrying = this.reconnect && !this._closing && !hopeless;
    const why = retrying || this._closing ? undefined : closeExplanation(code, reason);
    if (why && code === CLOSE_POLICY) console.warn(`bifrost: ${why}`);
    this.hooks.onDisconnected?.({code, reason, wasClean, refusal, final: !retrying, why});
    if (retrying) this._scheduleRetry();
    else this._failConnect(code, reason, refusal);
  }

  // The upgrade never opened, and a browser says only 1006: a plain GET of the upgrade path
  // answers with the status and reason the server refuses it with (docs/protocol.md section 2).
  // Resolves with {status, reason}, or undefined when it was not refused (or nothing answers).
  async _askWhyRefused() {
    try {
      const url = new URL(this.url);
      url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
      if (url.pathname.endsWith('/')) url.pathname += 'ws';
      url.search = ''; // no token: the answer depends on the origin and the server's state only
      if (globalThis.location) url.searchParams.set('origin', location.origin);
      const response = await fetch(url, {cache: 'no-store'});
      if (response.status === 403 || response.status === 503) {
        return {status: response.status, reason: (await response.json()).reason};
      }
    } catch {
      // the server does not answer at all: a plain lost connection
    }
    return undefined;
  }

  _failConnect(code, reason, refusal) {
    if (!this._firstConnect) return;
    const {reject} = this._firstConnect;
    this._firstConnect = null;
    if (refusal) {
      reject(new BifrostError('disconnected', `Connection refused (HTTP ${refusal.status} ${refusal.reason})`,
        {closeCode: code, reason: refusal.reason, status: refusal.status}));
      return;
    }
    reject(new BifrostError('disconnected', `Connection closed (${code}${reason ? ` ${reason}` : ''})`,
      {closeCode: code, reason}));
  }

  _rejectPending(code, reason) {
    for (const [id, entry] of this._pending) {
      this._settle(id);
      entry.reject(new BifrostError('disconnected', 'The connection closed before the reply arrived',
        {closeCode: code, reason}));
    }
  }

  _scheduleRetry() {
    this._attempt += 1;
    const base = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (this._attempt - 1));
    const delay = Math.round(Math.min(RETRY_MAX_MS, base * (0.8 + Math.random() * 0.4)));
    this.hooks.onReconnecting?.(this._attempt, delay);
    this._retryTimer = setTimeout(() => { if (!this._closing) this._open(); }, delay);
  }

  // -- per-request timers: `timeout` ms without any frame for the request ----------------

  _arm(id, entry) {
    entry.timer = setTimeout(() => {
      this._settle(id);
      entry.reject(new BifrostError('timeout', `No reply within ${entry.timeout} ms`));
    }, entry.timeout);
  }

  _rearm(id) {
    const entry = this._pending.get(id);
    if (!entry) return;
    clearTimeout(entry.timer);
    this._arm(id, entry);
  }

  _settle(id) {
    clearTimeout(this._pending.get(id)?.timer);
    this._pending.delete(id);
  }
}
