// The screen-at-a-moment page: moving the slider shows the time it points at, and
// letting go of it loads the screen at that time (the form works without this too).
"use strict";
(function () {
  const slider = document.getElementById("slider");
  const at = document.getElementById("at");
  const form = document.getElementById("timebar");
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
