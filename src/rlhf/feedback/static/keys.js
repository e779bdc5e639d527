// Keyboard shortcuts, as a progressive enhancement: every action is also a plain form button.
// A key clicks the button whose data-key matches; typing in a text field is left alone.
// On a ranking page, digits 1..k pick responses best first, filling in their ranks.
(function () {
  var picked = [];
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target && /^(TEXTAREA|INPUT|SELECT)$/.test(target.tagName)) return;
    var form = document.getElementById("answer");
    if (form && form.dataset.mode === "ranking" && /^[1-9]$/.test(event.key)) {
      var selects = form.querySelectorAll("select[name^='rank_']");
      var index = Number(event.key) - 1;
      if (index < selects.length && picked.indexOf(index) < 0) {
        picked.push(index);
        selects[index].value = String(picked.length);
      }
      event.preventDefault();
      return;
    }
    var button = document.querySelector("[data-key='" + event.key + "']");
    if (button) {
      event.preventDefault();
      button.click();
    }
  });
})();
