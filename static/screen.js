// The screen-at-a-moment page: moving the slider shows the time it points at, and
// letting go of it loads the screen at that time (the form works without this too).
"use strict";
(function () {
  const slider = document.getElementById("slider");
  const at = document.getElementById("at");
  const form = document.getElementById("timebar");
  const play = document.getElementById("play");
  if (play) {
    play.addEventListener("click", () => {
      // The vendored asciinema player, on the same recording the download link gives.
      const box = document.getElementById("player");
      box.replaceChildren();
      window.playerInstance = AsciinemaPlayer.create(play.dataset.src, box,
        {autoPlay: true, speed: 4, idleTimeLimit: 2, fit: false, terminalFontSize: "13px",
         preload: true});
    });
  }
  if (!slider || !at || !form) return;
  function iso(seconds) {
    return new Date(seconds * 1000).toISOString().replace(/\.\d+Z$/, "Z");
  }
  slider.addEventListener("input", () => { at.value = iso(Number(slider.value)); });
  slider.addEventListener("change", () => {
    at.value = iso(Number(slider.value));
    form.submit();
  });
})();
