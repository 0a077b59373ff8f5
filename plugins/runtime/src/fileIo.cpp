#include "fileIo.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <unistd.h>

namespace deformrt
{
namespace detail
{

Expected<std::string> readFile(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        return Status::error("cannot open " + path + ": " + std::strerror(errno));
    }
    std::string bytes{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
    if (file.bad())
    {
        return Status::error("cannot read " + path);
    }
    return bytes;
}

Status writeFileAtomic(std::string const& path, std::string const& bytes)
{
    std::string const temporary = path + ".tmp." + std::to_string(::getpid());
    {
        std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
        if (!file)
        {
            return Status::error("cannot write " + temporary + ": " + std::strerror(errno));
        }
        file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        file.flush();
        if (!file)
        {
            file.close();
            std::remove(temporary.c_str());
            return Status::error("cannot write " + temporary + " (disk full?)");
        }
    }
    if (std::rename(temporary.c_str(), path.c_str()) != 0)
    {
        std::string const reason = std::strerror(errno);
        std::remove(temporary.c_str());
        return Status::error("cannot rename " + temporary + " to " + path + ": " + reason);
    }
    return Status();
}

} // namespace detail
} // namespace deformrt
