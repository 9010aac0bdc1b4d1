// An episode's page reloads when a commit about this episode arrives (the page is rendered
// by the server, escaped; this script only reads a data attribute).
"use strict";
(function () {
  const id = document.body.dataset.episode;
  const live = document.getElementById("live");
  const events = new EventSource("/events");
  events.addEventListener("hello", () => { live.textContent = "live"; live.className = "live on"; });
  events.addEventListener("commit", (e) => {
    const c = JSON.parse(e.data);
    if (c.episode_id === id) window.location.reload();
  });
  events.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
})();
