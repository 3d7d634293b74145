-- Lists kept in a task hash (`workers`, `errors`) are JSON arrays appended to as text, so a
-- script never decodes what a task wrote.
local function json_append(list_json, item_json)
  if not list_json or list_json == '' or list_json == '[]' then
    return '[' .. item_json .. ']'
  end
  return string.sub(list_json, 1, -2) .. ',' .. item_json .. ']'
end
local function error_json(class_path, message)
  return cjson.encode({class_path, message})
end
