// appmaker's live page: one row per person, kept up to date from /events (Server-Sent Events),
// and a button per row that asks appmaker's server to send that person a live notification.
const people = document.getElementById('people');
const connection = document.getElementById('connection');
const sent = document.getElementById('sent');
const rows = new Map();

function show(person) {
  let row = rows.get(person.uid);
  if (person.status === 'revoked') {
    if (row) { row.remove(); rows.delete(person.uid); }
    return;
  }
  if (!row) {
    row = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'name';
    const status = document.createElement('span');
    status.className = 'status';
    const button = document.createElement('button');
    button.className = 'notify';
    button.textContent = 'Send a notification';
    button.addEventListener('click', () => notify(person.uid));
    row.append(name, status, button);
    people.append(row);
    rows.set(person.uid, row);
  }
  row.dataset.name = person.name;
  row.dataset.status = person.status;
  row.querySelector('.name').textContent = person.name;
  row.querySelector('.status').textContent = person.status;
  row.querySelector('.notify').setAttribute('aria-label', `Send ${person.name} a notification`);
}

async function notify(uid) {
  sent.textContent = 'Sending…';
  try {
    const response = await fetch('/notify', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ uid }),
    });
    const answer = await response.json();
    const to = answer.delivered_to ? ` to ${answer.delivered_to} device(s)` : '';
    const why = answer.detail ? ` (${answer.detail})` : '';
    sent.textContent = `Notification for ${answer.name || 'them'}: ${answer.status}${to}${why}`;
    sent.dataset.status = answer.status;
  } catch (error) {
    sent.textContent = `Notification not sent: ${error}`;
    sent.dataset.status = 'failed';
  }
}

const events = new EventSource('/events');
events.onopen = () => { connection.textContent = 'Live: statuses change as people\'s devices report them.'; };
events.onerror = () => { connection.textContent = 'Reconnecting…'; };
events.onmessage = (event) => show(JSON.parse(event.data));
